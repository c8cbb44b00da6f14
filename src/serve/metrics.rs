//! `GET /metrics`: counters since the server started, in Prometheus' text format.

use std::fmt::Write;

use crate::engine::GenStats;

#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub requests: u64,
    /// Requests answered with an error (bad input included).
    pub failed: u64,
    /// Requests whose client left before the end.
    pub cancelled: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub generated_tokens: u64,
    /// Speeds of the latest finished request.
    pub prefill_tps: f64,
    pub decode_tps: f64,
    pub ttft_ms: f64,
}

impl Metrics {
    pub fn finished(&mut self, stats: &GenStats) {
        self.prompt_tokens += stats.prompt_tokens as u64;
        self.cached_tokens += super::openai::cached_tokens(stats) as u64;
        self.generated_tokens += stats.generated_tokens as u64;
        self.prefill_tps = stats.prefill_tps;
        self.decode_tps = stats.decode_tps;
        self.ttft_ms = stats.ttft_ms;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP lcode_{name} {help}");
            let _ = writeln!(out, "# TYPE lcode_{name} {kind}");
            let _ = writeln!(out, "lcode_{name} {value}");
        };
        put(
            "requests_total",
            "counter",
            "Completion requests received.",
            self.requests as f64,
        );
        put(
            "requests_failed_total",
            "counter",
            "Requests answered with an error.",
            self.failed as f64,
        );
        put(
            "requests_cancelled_total",
            "counter",
            "Requests whose client disconnected first.",
            self.cancelled as f64,
        );
        put(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens of finished requests.",
            self.prompt_tokens as f64,
        );
        put(
            "cached_tokens_total",
            "counter",
            "Prompt tokens the prefix cache reused.",
            self.cached_tokens as f64,
        );
        put(
            "generated_tokens_total",
            "counter",
            "Tokens generated.",
            self.generated_tokens as f64,
        );
        put(
            "prefill_tokens_per_second",
            "gauge",
            "Prefill speed of the latest request.",
            self.prefill_tps,
        );
        put(
            "decode_tokens_per_second",
            "gauge",
            "Decode speed of the latest request.",
            self.decode_tps,
        );
        put(
            "time_to_first_token_ms",
            "gauge",
            "Time to first token of the latest request.",
            self.ttft_ms,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_in_prometheus_text() {
        let mut m = Metrics {
            requests: 2,
            ..Default::default()
        };
        for _ in 0..2 {
            m.finished(&GenStats {
                prompt_tokens: 100,
                reused_tokens: 40,
                generated_tokens: 8,
                decode_tps: 30.5,
                ..Default::default()
            });
        }
        let text = m.render();
        assert!(text.contains("# TYPE lcode_requests_total counter\nlcode_requests_total 2\n"));
        assert!(text.contains("lcode_prompt_tokens_total 200\n"));
        assert!(text.contains("lcode_cached_tokens_total 80\n"));
        assert!(text.contains("lcode_decode_tokens_per_second 30.5\n"));
    }
}
