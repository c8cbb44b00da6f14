const { total } = require("./cart");
console.log(total({ id: 7 }));
