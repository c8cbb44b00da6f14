import shop


def invoice_total(lines):
    return shop.calc_total([l["amount"] for l in lines])
