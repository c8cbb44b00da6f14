from inventory import in_stock

for item in ["apple", "kiwi"]:
    print(item, in_stock(item))
