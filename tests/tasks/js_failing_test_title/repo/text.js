// "hello big world" -> "Hello Big World"
function titleCase(s) {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

module.exports = { titleCase };
