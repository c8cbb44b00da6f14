function toText(rows) {
  return rows.map((r) => `${r.name}: ${r.score}`).join("\n");
}

module.exports = { toText };
