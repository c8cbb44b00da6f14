//! `lcode serve` driven over HTTP as clients drive it: the real binary on a free port,
//! the real tiny model (or the scripted engine where a test needs a slow, known reply),
//! and `lcode exec --endpoint` through it.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// A `lcode serve` child on a free port, killed when dropped.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// `lcode serve` with `args`; with `script`, the scripted engine's replies.
    fn start(args: &[&str], script: Option<Value>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = common::lcode();
        cmd.args(["serve", "--port", "0"])
            .args(args)
            .env("LCODE_DATA_DIR", dir.path())
            .env("LCODE_CONFIG_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(script) = script {
            let path = dir.path().join("script.json");
            fs::write(&path, script.to_string()).unwrap();
            cmd.env("LCODE_SCRIPT", path);
        }
        let mut child = cmd.spawn().expect("spawn lcode serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let base = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!("lcode serve exited before listening: {seen}");
            }
            seen.push_str(&line);
            if let Some(at) = line.find("listening on ") {
                break line[at + "listening on ".len()..].trim().to_string();
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = stderr.read_to_string(&mut sink);
        });
        Server {
            child,
            base,
            _dir: dir,
        }
    }

    fn tiny(extra: &[&str]) -> Self {
        let model = common::model("tiny");
        let mut args = vec!["--model", model.to_str().unwrap(), "--ctx", "1024"];
        args.extend_from_slice(extra);
        Self::start(&args, None)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.trim_end_matches("/v1"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// Status and body of a POST.
fn post(url: &str, body: &Value, key: Option<&str>) -> (u16, String) {
    let mut req = http().post(url);
    if let Some(k) = key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let mut r = req.send_json(body).expect("POST");
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn get(url: &str, key: Option<&str>) -> (u16, String) {
    let mut req = http().get(url);
    if let Some(k) = key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let mut r = req.call().expect("GET");
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

/// The JSON payloads of a server-sent event stream, `[DONE]` as a string.
fn sse_payloads(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_string())))
        .collect()
}

fn metric(server: &Server, name: &str) -> f64 {
    let (_, text) = get(&server.url("/metrics"), None);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

const QUESTION: &str = "Write one sentence about the sea.";

#[test]
fn chat_whole_and_streamed_agree_and_a_repeated_prefix_is_cached() {
    let server = Server::tiny(&[]);
    let (status, models) = get(&format!("{}/models", server.base), None);
    assert_eq!(status, 200, "{models}");
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["context_length"], 1024);

    let request = json!({
        "model": "tiny",
        "messages": [{"role": "system", "content": "You are brief."},
                     {"role": "user", "content": QUESTION}],
        "temperature": 0,
        "max_tokens": 24,
    });
    let (status, body) = post(&format!("{}/chat/completions", server.base), &request, None);
    assert_eq!(status, 200, "{body}");
    let whole: Value = serde_json::from_str(&body).unwrap();
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.trim().is_empty(), "{body}");
    let prompt_tokens = whole["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 10, "{body}");
    assert_eq!(whole["object"], "chat.completion");

    // The same prompt streamed: the same greedy text, in chunks, then usage and [DONE];
    // its prompt was all seen before, so the prefix cache reports it.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, body) = post(
        &format!("{}/chat/completions", server.base),
        &streamed,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let chunks = sse_payloads(&body);
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(joined, text);
    assert!(
        chunks
            .iter()
            .filter(|c| c["object"] == "chat.completion.chunk")
            .count()
            > 3
    );
    let usage = &chunks[chunks.len() - 2]["usage"];
    assert_eq!(usage["prompt_tokens"].as_u64().unwrap(), prompt_tokens);
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached + 1 >= prompt_tokens,
        "cached {cached} of {prompt_tokens}"
    );

    // Raw completions take the same options.
    let (status, body) = post(
        &format!("{}/completions", server.base),
        &json!({"prompt": "def add(a, b):", "max_tokens": 8, "temperature": 0, "stop": ["\n\n"]}),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].is_string());

    assert_eq!(metric(&server, "lcode_requests_total"), 3.0);
    assert!(metric(&server, "lcode_cached_tokens_total") >= cached as f64);
    let (status, health) = get(&server.url("/health"), None);
    assert_eq!((status, health.contains("ok")), (200, true));
}

#[test]
fn bad_requests_get_400s_that_say_why() {
    let server = Server::tiny(&[]);
    let chat = format!("{}/chat/completions", server.base);
    // Longer than the 1,024-token context.
    let long = "the sea is wide and deep ".repeat(400);
    let (status, body) = post(
        &chat,
        &json!({"messages": [{"role": "user", "content": long}]}),
        None,
    );
    assert_eq!(status, 400, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["n_ctx"], 1024);
    assert!(err["error"]["n_prompt_tokens"].as_u64().unwrap() > 1024);
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tokens") && message.contains("1024"),
        "{message}"
    );

    let mut r = http()
        .post(&chat)
        .header("Content-Type", "application/json")
        .send("{\"messages\": [")
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body = r.body_mut().read_to_string().unwrap();
    assert!(body.contains("not valid JSON"), "{body}");

    let (status, body) = post(&chat, &json!({"messages": []}), None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(metric(&server, "lcode_requests_failed_total"), 3.0);
}

#[test]
fn an_api_key_guards_every_api_route() {
    let server = Server::tiny(&["--api-key", "sekrit"]);
    let chat = format!("{}/chat/completions", server.base);
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    for key in [None, Some("wrong")] {
        let (status, text) = post(&chat, &body, key);
        assert_eq!(status, 401, "{text}");
        assert!(text.contains("API key"), "{text}");
        assert_eq!(get(&format!("{}/models", server.base), key).0, 401);
    }
    assert_eq!(post(&chat, &body, Some("sekrit")).0, 200);
    assert_eq!(
        get(&format!("{}/models", server.base), Some("sekrit")).0,
        200
    );
    assert_eq!(get(&server.url("/health"), None).0, 200);
}

#[test]
fn a_client_that_disconnects_cancels_its_generation() {
    // A reply of 3,000 tokens at 20 ms each: a minute, unless cancelled.
    let server = Server::start(
        &["--model", "fast"],
        Some(json!({"replies": ["x".repeat(3000)], "token_delay_ms": 20})),
    );
    let request = json!({"messages": [{"role": "user", "content": "go"}], "stream": true});
    let response = http()
        .post(&format!("{}/chat/completions", server.base))
        .send_json(&request)
        .unwrap();
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut chunks = 0;
    while chunks < 5 {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        chunks += usize::from(line.starts_with("data: "));
    }
    drop(reader);
    // The engine stops, and what it generated before the cancel is counted.
    let mut generated = 0.0;
    for _ in 0..100 {
        generated = metric(&server, "lcode_generated_tokens_total");
        if generated > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&server, "lcode_requests_cancelled_total"), 1.0);
    assert!(
        generated > 0.0 && generated < 3000.0,
        "generated {generated} tokens of a cancelled reply"
    );
}

/// `lcode exec --json --endpoint` the server's URL; its events. Exit 2 (the step limit
/// reached) counts as a run.
fn exec_through(server: &Server, repo: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let data = tempfile::tempdir().unwrap();
    let out = common::lcode()
        .args(["exec", "--json", "--endpoint", &server.base])
        .args(args)
        .current_dir(repo)
        .env("LCODE_DATA_DIR", data.path())
        .env("LCODE_CONFIG_DIR", data.path())
        .env_remove("LCODE_SCRIPT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(2)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn exec_through_an_endpoint_edits_the_repository() {
    // The scripted engine behind the server answers with an edit: the whole task (the
    // request, the proposal, the applied edit) crosses HTTP.
    let server = Server::start(
        &["--model", "fast"],
        Some(json!([
            "calc.py\n```python\ndef add(a, b):\n    return a + b\n```\n",
            "Done."
        ])),
    );
    let repo = common::git_repo(&[("calc.py", "def add(a, b):\n    return a - b\n")]);
    let events = exec_through(
        &server,
        repo.path(),
        &["--approve", "edits", "fix the bug in add in calc.py"],
    );
    let loaded = events.iter().find(|e| e["type"] == "model_loaded").unwrap();
    assert_eq!(loaded["endpoint"], server.base.as_str(), "{loaded}");
    assert!(events.iter().any(|e| e["type"] == "edit_proposed"));
    assert_eq!(
        fs::read_to_string(repo.path().join("calc.py")).unwrap(),
        "def add(a, b):\n    return a + b\n"
    );
    assert!(metric(&server, "lcode_requests_total") >= 1.0);
}

#[test]
fn exec_through_an_endpoint_runs_the_real_tiny_model() {
    let server = Server::tiny(&[]);
    let repo = common::git_repo(&[("app.py", "def f():\n    return 1\n")]);
    let events = exec_through(
        &server,
        repo.path(),
        &["--max-steps", "1", "What does f in app.py return?"],
    );
    assert!(events.iter().any(|e| e["type"] == "text"));
    let stats = events.iter().find(|e| e["type"] == "stats").unwrap();
    // Token counts are the server's own (its usage), not estimates.
    let served_prompt = metric(&server, "lcode_prompt_tokens_total");
    assert!(served_prompt > 0.0);
    assert!(stats["prompt_tokens"].as_f64().unwrap() <= served_prompt);
    assert!(stats["decode_tps"].as_f64().unwrap() > 0.0);
    assert!(events.iter().any(|e| e["type"] == "turn_done"));
}

#[test]
fn an_unreachable_endpoint_is_one_line_naming_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let repo = common::git_repo(&[("a.py", "x = 1\n")]);
    let data = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/v1");
    let out = common::lcode()
        .args(["exec", "--endpoint", &url, "what is x?"])
        .current_dir(repo.path())
        .env("LCODE_DATA_DIR", data.path())
        .env("LCODE_CONFIG_DIR", data.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = common::one_line_error(&out);
    assert!(err.contains(&url), "{err}");
}

#[test]
fn an_endpoint_key_comes_from_the_configured_variable_and_a_refused_one_is_one_line() {
    let server = Server::start(
        &["--model", "fast", "--api-key", "sekrit"],
        Some(json!(["x is 1."])),
    );
    let repo = common::git_repo(&[("a.py", "x = 1\n")]);
    let run = |config: Option<&str>, key: Option<&str>| {
        let data = tempfile::tempdir().unwrap();
        if let Some(config) = config {
            fs::write(data.path().join("config.toml"), config).unwrap();
        }
        let mut cmd = common::lcode();
        cmd.args(["exec", "--endpoint", &server.base, "what is x?"])
            .current_dir(repo.path())
            .env("LCODE_DATA_DIR", data.path())
            .env("LCODE_CONFIG_DIR", data.path())
            .env_remove("LCODE_SCRIPT")
            .env_remove("TEST_SERVER_KEY")
            .stdin(Stdio::null());
        if let Some(key) = key {
            cmd.env("TEST_SERVER_KEY", key);
        }
        cmd.output().unwrap()
    };
    let err = common::one_line_error(&run(None, None));
    assert!(err.contains(&server.base) && err.contains("401"), "{err}");
    let config = "endpoint_key_env = \"TEST_SERVER_KEY\"\n";
    let err = common::one_line_error(&run(Some(config), Some("wrong")));
    assert!(err.contains("401"), "{err}");
    let out = run(Some(config), Some("sekrit"));
    common::assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("x is 1."));
}
