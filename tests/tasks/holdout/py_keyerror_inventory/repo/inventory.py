STOCK = {"apple": 3, "pear": 0}


def in_stock(item):
    return STOCK[item] > 0


def restock(item, n):
    STOCK[item] = STOCK.get(item, 0) + n
