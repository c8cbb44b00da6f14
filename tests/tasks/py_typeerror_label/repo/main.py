from labels import label

print(label("box", 3))
