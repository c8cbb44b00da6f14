const { toText } = require("./report");

const rows = [
  { name: "ana", score: 3 },
  { name: "bo", score: 5 },
];
console.log(toText(rows));
