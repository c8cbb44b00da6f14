module nums

go 1.19
