from shapes import Rectangle


def total_perimeter(rects):
    return sum(r.perimeter() for r in rects)
