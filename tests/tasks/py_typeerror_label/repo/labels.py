def label(name, count):
    return name + ": " + count + " items"
