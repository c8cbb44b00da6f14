//! The engine on the real tiny and fast models, checked against llama.cpp's outputs in
//! `../shared/reference/`.

mod common;

use std::time::{Duration, Instant};

use lcode::engine::{
    EngineEvent, EngineHandle, EngineOptions, GenerateRequest, ModelSource, Prompt, StopReason,
};

fn engine(tier: &str) -> (EngineHandle, lcode::engine::ModelInfo) {
    let path = common::model(tier);
    let engine = EngineHandle::spawn(EngineOptions::default());
    let info = engine
        .load_blocking(ModelSource {
            path,
            tier: Some(tier.into()),
        })
        .expect("load");
    (engine, info)
}

fn check_tokenizer(tier: &str, reference: &str) {
    let path = common::model(tier);
    let gguf = lcode::engine::gguf::GgufFile::open(&path).unwrap();
    let vocab = lcode::engine::tokenizer::Vocab::from_gguf(&gguf).unwrap();
    let cases = common::reference(reference)["cases"]
        .as_array()
        .unwrap()
        .clone();
    assert!(cases.len() > 100);
    let mut bad = Vec::new();
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        if vocab.encode(text).unwrap() != want {
            bad.push(text.chars().take(40).collect::<String>());
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} texts tokenize differently: {bad:?}",
        bad.len(),
        cases.len()
    );
}

#[test]
fn smollm2_tokenizer_matches_llama_cpp() {
    check_tokenizer("tiny", "tokenizer-smollm2-135m-public.json");
}

#[test]
fn qwen_tokenizer_matches_llama_cpp() {
    check_tokenizer("fast", "tokenizer-qwen2.5-coder-0.5b-public.json");
}

#[test]
fn tokenize_cli_jsonl_and_whole_stdin() {
    common::model("tiny");
    let out = common::run_with_stdin(
        {
            let mut c = common::lcode();
            c.args(["tokenize", "--model", "tiny", "--jsonl"]);
            c
        },
        b"\"\"\n\"<|im_start|>user\"\n",
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "[]\n[1,4093]\n");
    let out = common::run_with_stdin(
        {
            let mut c = common::lcode();
            c.args(["tokenize", "--model", "tiny"]);
            c
        },
        b"a\n",
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "[81,198]\n");
    let out = common::run_with_stdin(
        {
            let mut c = common::lcode();
            c.args(["tokenize", "--model", "tiny", "--jsonl"]);
            c
        },
        b"\"ok\"\nnot json\n",
    );
    assert!(common::one_line_error(&out).contains("line 2"));
}

/// How many of llama.cpp's tokens must match: up to and including the first near tie.
fn required(case: &serde_json::Value) -> usize {
    let margins = case["top2_logprob_margin"].as_array().unwrap();
    margins
        .iter()
        .position(|m| m.as_f64().unwrap() < 0.1)
        .map(|i| i + 1)
        .unwrap_or(case["greedy_ids"].as_array().unwrap().len())
}

fn greedy_parity(tier: &str, reference: &str) {
    let (engine, _) = engine(tier);
    let mut cases = common::reference(reference)["cases"]
        .as_array()
        .unwrap()
        .clone();
    // The first N cases only (scripts/test-arm64: emulation is slow).
    if let Some(n) = std::env::var("LCODE_PARITY_CASES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        cases.truncate(n.max(1));
    }
    let mut matched = 0;
    for case in &cases {
        let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        let got = engine
            .generate_blocking(GenerateRequest::new(Prompt::Tokens(prompt), 16))
            .unwrap();
        let k = required(case);
        if got.tokens.len() >= k && got.tokens[..k] == want[..k] {
            matched += 1;
        }
    }
    let rate = matched as f64 / cases.len() as f64;
    eprintln!(
        "{tier}: {matched}/{} greedy cases match llama.cpp",
        cases.len()
    );
    assert!(
        rate >= 0.9,
        "{tier}: only {matched}/{} greedy cases match llama.cpp",
        cases.len()
    );
}

#[test]
fn tiny_greedy_matches_llama_cpp() {
    greedy_parity("tiny", "greedy-smollm2-135m-public.json");
}

#[test]
fn fast_greedy_matches_llama_cpp() {
    greedy_parity("fast", "greedy-qwen2.5-coder-0.5b-public.json");
}

#[test]
fn a_warm_cache_gives_the_cold_runs_tokens() {
    let (engine, info) = engine("tiny");
    let text = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n";
    let prompt = info.vocab.encode(text).unwrap();
    engine.clear_cache();
    let cold = engine
        .generate_blocking(GenerateRequest::new(Prompt::Tokens(prompt.clone()), 24))
        .unwrap();
    assert_eq!(cold.stats.reused_tokens, 0);
    let warm = engine
        .generate_blocking(GenerateRequest::new(Prompt::Tokens(prompt.clone()), 24))
        .unwrap();
    assert_eq!(warm.stats.reused_tokens, prompt.len() - 1);
    assert_eq!(warm.tokens, cold.tokens);
    // A follow-up turn: the cached prompt plus the answer plus new text.
    let mut follow = prompt.clone();
    follow.extend(&cold.tokens[..cold.tokens.len() - 1]);
    follow.extend(info.vocab.encode("\n# Now in Rust\n").unwrap());
    let warm2 = engine
        .generate_blocking(GenerateRequest::new(Prompt::Tokens(follow.clone()), 16))
        .unwrap();
    assert!(
        warm2.stats.reused_tokens >= prompt.len() + cold.tokens.len() - 2,
        "reused {}",
        warm2.stats.reused_tokens
    );
    engine.clear_cache();
    let cold2 = engine
        .generate_blocking(GenerateRequest::new(Prompt::Tokens(follow), 16))
        .unwrap();
    assert_eq!(cold2.stats.reused_tokens, 0);
    assert_eq!(warm2.tokens, cold2.tokens);
}

#[test]
fn a_prompt_snapshot_warms_the_next_runs_first_turn() {
    // Only this test reads the cache dir: the snapshots go to a folder of its own.
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("LCODE_CACHE_DIR", dir.path());
    let with_snapshots = EngineOptions {
        prompt_snapshots: true,
        ..EngineOptions::default()
    };
    let start = |options: EngineOptions| {
        let engine = EngineHandle::spawn(options);
        let info = engine
            .load_blocking(ModelSource {
                path: common::model("tiny"),
                tier: Some("tiny".into()),
            })
            .expect("load");
        (engine, info)
    };
    // Under 64 tokens in all: longer prompts take llama.cpp's tiled attention for a
    // cold prefill and its one-row form for a warm suffix, whose roundings differ, so
    // their outputs may part at a near tie (as with llama.cpp's own prompt cache).
    let system = "You are a careful assistant. Answer in one short sentence, name the file \
                  and the line, and never invent an API.\n";
    let (first, info) = start(with_snapshots);
    let opening = info
        .vocab
        .encode(&format!("{system}Q: what is 2 + 2?\nA:"))
        .unwrap();
    let one = first
        .generate_blocking(GenerateRequest::new(Prompt::Tokens(opening), 8))
        .unwrap();
    assert_eq!(one.stats.snapshot_tokens, 0);
    first.shutdown();

    // The next run: a new engine, an empty memory cache, the same system text.
    let (second, _) = start(with_snapshots);
    let prompt = info
        .vocab
        .encode(&format!("{system}Q: name a prime.\nA:"))
        .unwrap();
    let system_len = info.vocab.encode(system).unwrap().len();
    let warm = second
        .generate_blocking(GenerateRequest::new(Prompt::Tokens(prompt.clone()), 12))
        .unwrap();
    assert!(
        warm.stats.snapshot_tokens + 2 >= system_len,
        "{} of {system_len} system tokens came from the snapshot",
        warm.stats.snapshot_tokens
    );
    assert_eq!(warm.stats.reused_tokens, warm.stats.snapshot_tokens);
    // The answer is the one a cold engine gives.
    let (cold_engine, _) = start(EngineOptions::default());
    let cold = cold_engine
        .generate_blocking(GenerateRequest::new(Prompt::Tokens(prompt), 12))
        .unwrap();
    assert_eq!(cold.stats.reused_tokens, 0);
    assert_eq!(warm.tokens, cold.tokens);
}

#[test]
fn two_sequences_do_not_evict_each_other() {
    let (engine, info) = engine("tiny");
    let a = info
        .vocab
        .encode("The conversation so far: a user asks about sorting lists in Python.")
        .unwrap();
    let b = info
        .vocab
        .encode("A side query that shares nothing: list the files of the repo.")
        .unwrap();
    engine
        .generate_blocking(GenerateRequest::new(Prompt::Tokens(a.clone()), 4))
        .unwrap();
    engine
        .generate_blocking(GenerateRequest::new(Prompt::Tokens(b.clone()), 4))
        .unwrap();
    let again = engine
        .generate_blocking(GenerateRequest::new(Prompt::Tokens(a.clone()), 4))
        .unwrap();
    assert_eq!(again.stats.reused_tokens, a.len() - 1);
    let again = engine
        .generate_blocking(GenerateRequest::new(Prompt::Tokens(b.clone()), 4))
        .unwrap();
    assert_eq!(again.stats.reused_tokens, b.len() - 1);
}

#[test]
fn cancel_stops_within_a_token_and_stats_are_reported() {
    let (engine, _) = engine("tiny");
    let mut req = GenerateRequest::new(Prompt::Raw("Once upon a time".into()), 2000);
    req.ignore_eos = true;
    let mut gen = engine.generate(req);
    let mut tokens_after_cancel = 0;
    let mut cancelled_at = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut done = None;
    while let Some(ev) = gen.events.blocking_recv() {
        assert!(Instant::now() < deadline, "generation did not stop");
        match ev {
            EngineEvent::Token { .. } => {
                if cancelled_at.is_some() {
                    tokens_after_cancel += 1;
                } else {
                    gen.cancel.cancel();
                    cancelled_at = Some(Instant::now());
                }
            }
            EngineEvent::Done {
                stop,
                stats,
                tokens,
                ..
            } => {
                done = Some((stop, stats, tokens));
                break;
            }
            EngineEvent::Error(e) => panic!("{e}"),
            _ => {}
        }
    }
    let (stop, stats, tokens) = done.expect("a Done event");
    assert_eq!(stop, StopReason::Cancelled);
    assert!(
        tokens_after_cancel <= 1,
        "{tokens_after_cancel} tokens after cancel"
    );
    assert!(tokens.len() <= 3);
    assert!(
        stats.prompt_tokens > 0 && stats.ttft_ms > 0.0 && stats.kv_bytes > 0 && stats.rss_mb > 0.0
    );
    // The engine still answers after a cancel.
    let c = engine
        .generate_blocking(GenerateRequest::new(Prompt::Raw("Hello".into()), 3))
        .unwrap();
    assert_eq!(c.stop, StopReason::Length);
    assert!(c.stats.prefill_tps > 0.0 && c.stats.decode_tps > 0.0);
}

#[test]
fn generate_json_has_the_documented_fields() {
    common::model("tiny");
    let out = common::lcode()
        .args([
            "generate",
            "--model",
            "tiny",
            "--raw",
            "--greedy",
            "--json",
            "-n",
            "5",
            "--prompt",
            "def add(a, b):\n",
        ])
        .output()
        .unwrap();
    common::assert_success(&out);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["text"].is_string());
    assert!(v["tokens"].as_array().unwrap().len() <= 5);
    assert!(["eos", "length", "stop_string"].contains(&v["stop"].as_str().unwrap()));
    for key in [
        "prompt_tokens",
        "reused_tokens",
        "ttft_ms",
        "prefill_tps",
        "decode_tps",
        "kv_bytes",
        "rss_mb",
    ] {
        assert!(v["stats"][key].is_number(), "missing stats.{key}");
    }
}

/// `--top-logprobs N`: one list per generated token, best first, whose first entry is
/// the greedy token itself, with log-probabilities at most 0.
#[test]
fn generate_top_logprobs_lists_the_greedy_token_first() {
    common::model("tiny");
    let out = common::lcode()
        .args([
            "generate",
            "--model",
            "tiny",
            "--raw",
            "--greedy",
            "--json",
            "-n",
            "6",
            "--top-logprobs",
            "3",
            "--prompt",
            "def add(a, b):\n",
        ])
        .output()
        .unwrap();
    common::assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tokens = v["tokens"].as_array().unwrap();
    let top = v["top_logprobs"].as_array().unwrap();
    assert_eq!(top.len(), tokens.len());
    for (step, (token, cands)) in tokens.iter().zip(top).enumerate() {
        let cands = cands.as_array().unwrap();
        assert_eq!(cands.len(), 3, "step {step}");
        assert_eq!(
            &cands[0]["id"], token,
            "step {step}: the greedy token comes first"
        );
        let lps: Vec<f64> = cands
            .iter()
            .map(|c| c["logprob"].as_f64().unwrap())
            .collect();
        assert!(
            lps[0] <= 0.0 && lps.windows(2).all(|w| w[0] >= w[1]),
            "step {step}: {lps:?}"
        );
    }
}

#[test]
fn stdin_prompts_keep_their_trailing_newline() {
    common::model("tiny");
    let run = |prompt: &[u8]| {
        let mut c = common::lcode();
        c.args([
            "generate", "--model", "tiny", "--raw", "--greedy", "--json", "-n", "1", "--prompt",
            "-",
        ]);
        let out = common::run_with_stdin(c, prompt);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["stats"]["prompt_tokens"].as_u64().unwrap()
    };
    assert_eq!(run(b"x = 1\n"), run(b"x = 1") + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_second_turn_reuses_the_first_turns_prefix() {
    use lcode::agent::{self, AgentOptions, Policy};
    use lcode::protocol::{Event, Op};
    let path = common::model("tiny");
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("a.py"), "x = 1\n").unwrap();
    let engine = EngineHandle::spawn(EngineOptions {
        ctx: 2048,
        ..Default::default()
    });
    let ws = lcode::tools::workspace::Workspace::at(repo.path()).unwrap();
    let mut opts = AgentOptions::new(
        ws,
        ModelSource {
            path,
            tier: Some("tiny".into()),
        },
    );
    opts.policy = Policy::None;
    opts.max_steps = 1;
    opts.max_reply_tokens = 24;
    let mut a = agent::spawn(engine, opts);
    let mut reused = Vec::new();
    for q in ["Say hi.", "Say bye."] {
        a.ops.send(Op::UserTurn { text: q.into() }).unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(120), a.events.recv())
                .await
                .unwrap()
                .unwrap()
            {
                Event::Stats(s) if s.decode_tps > 0.0 => {
                    reused.push((s.reused_tokens, s.context_used))
                }
                Event::TurnDone { .. } => break,
                _ => {}
            }
        }
    }
    assert_eq!(reused.len(), 2, "{reused:?}");
    assert_eq!(reused[0].0, 0);
    // The second turn pays only for its new tokens: everything up to the end of the
    // first reply comes from the cache.
    assert!(reused[1].0 + 40 > reused[0].1, "{reused:?}");
}

#[test]
fn speculative_decoding_gives_exactly_the_plain_greedy_tokens() {
    let (engine, _info) = engine("tiny");
    let text = "def area(width, height):\n    return width * height\n\n\ndef perimeter(width, height):\n    return 2 * (width + height)\n";
    let prompt = format!("Copy this code exactly:\n\n```python\n{text}```\n");
    let run = |speculate: bool| {
        let mut req = GenerateRequest::new(
            Prompt::Chat(vec![lcode::engine::template::ChatMessage::new(
                "user",
                prompt.clone(),
            )]),
            120,
        );
        req.speculate = speculate;
        engine.generate_blocking(req).unwrap()
    };
    let plain = run(false);
    let spec = run(true);
    assert_eq!(plain.tokens, spec.tokens, "speculation changed the output");
    assert_eq!(plain.stats.draft_tokens, 0);
    assert!(
        spec.stats.draft_tokens > 0 && spec.stats.accepted_tokens > 0,
        "{:?}",
        spec.stats
    );
}
