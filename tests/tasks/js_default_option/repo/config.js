const defaults = {
  retries: 3,
  timeoutMs: 1000,
};

function options(overrides = {}) {
  return { ...defaults, ...overrides };
}

module.exports = { options };
