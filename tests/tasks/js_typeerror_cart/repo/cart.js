function total(order) {
  let sum = 0;
  for (let i = 0; i < order.items.length; i++) {
    sum += order.items[i].price * order.items[i].qty;
  }
  return sum;
}

module.exports = { total };
