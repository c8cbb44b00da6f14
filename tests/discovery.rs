//! `lcode models` finds the GGUF files other tools keep, in a temporary HOME.

mod common;

use std::fs;

#[test]
fn models_lists_tiers_and_the_three_discovery_layouts() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // Hugging Face hub cache.
    let snap =
        h.join(".cache/huggingface/hub/models--Qwen--Qwen2.5-Coder-7B-GGUF/snapshots/abc123");
    fs::create_dir_all(&snap).unwrap();
    fs::write(snap.join("qwen-7b-q4_k_m.gguf"), b"GGUF-hf").unwrap();
    fs::write(snap.join("README.md"), b"not a model").unwrap();
    // Ollama: manifest -> model layer -> blob.
    let manifests = h.join(".ollama/models/manifests/registry.ollama.ai/library/qwen2.5-coder");
    fs::create_dir_all(&manifests).unwrap();
    let digest = "sha256:0123abcd";
    fs::write(
        manifests.join("1.5b"),
        format!(
            r#"{{"schemaVersion":2,"layers":[{{"mediaType":"application/vnd.ollama.image.template","digest":"sha256:ffff"}},{{"mediaType":"application/vnd.ollama.image.model","digest":"{digest}","size":9}}]}}"#
        ),
    )
    .unwrap();
    fs::create_dir_all(h.join(".ollama/models/blobs")).unwrap();
    fs::write(h.join(".ollama/models/blobs/sha256-0123abcd"), b"GGUF-olla").unwrap();
    // LM Studio.
    let lms = h.join(".lmstudio/models/lmstudio-community/SmolLM2-GGUF");
    fs::create_dir_all(&lms).unwrap();
    fs::write(lms.join("smollm2-q8_0.gguf"), b"GGUF-lmstudio").unwrap();

    let models = tempfile::tempdir().unwrap();
    let out = common::lcode()
        .env("HOME", h)
        .env_remove("HF_HOME")
        .env_remove("OLLAMA_MODELS")
        .env("LCODE_MODELS", models.path())
        .args(["models", "--json"])
        .output()
        .unwrap();
    common::assert_success(&out);
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let named = |extra: bool| -> Vec<&str> {
        rows.iter()
            .filter(|r| r["extra"] == extra)
            .filter_map(|r| r["tier"].as_str())
            .collect()
    };
    assert_eq!(named(false), vec!["tiny", "fast", "quality"]);
    assert_eq!(named(true), vec!["gemma3-270m"]);
    assert!(rows
        .iter()
        .filter(|r| r["tier"].is_string())
        .all(|r| r["installed"] == false));
    let found = |source: &str| {
        rows.iter()
            .find(|r| r["source"] == source)
            .unwrap_or_else(|| panic!("no {source} row in {rows:?}"))
            .clone()
    };
    let hf = found("huggingface");
    assert_eq!(
        hf["model"],
        "Qwen/Qwen2.5-Coder-7B-GGUF/qwen-7b-q4_k_m.gguf"
    );
    assert_eq!(hf["size"], 7);
    let ol = found("ollama");
    assert_eq!(ol["model"], "qwen2.5-coder:1.5b");
    assert!(ol["path"]
        .as_str()
        .unwrap()
        .ends_with("blobs/sha256-0123abcd"));
    let lm = found("lmstudio");
    assert_eq!(
        lm["model"],
        "lmstudio-community/SmolLM2-GGUF/smollm2-q8_0.gguf"
    );
    assert_eq!(rows.iter().filter(|r| r["source"].is_string()).count(), 3);

    // HF_HOME moves the hub cache.
    let other = tempfile::tempdir().unwrap();
    let snap = other.path().join("hub/models--a--b/snapshots/r1");
    fs::create_dir_all(&snap).unwrap();
    fs::write(snap.join("m.gguf"), b"x").unwrap();
    let out = common::lcode()
        .env("HOME", h)
        .env("HF_HOME", other.path())
        .env("LCODE_MODELS", models.path())
        .args(["models", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("a/b/m.gguf"), "{text}");
}

#[test]
fn models_table_says_whether_an_installed_tier_fits() {
    common::model("tiny");
    let out = common::lcode().args(["models"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let tiny = text.lines().find(|l| l.starts_with("tiny")).unwrap();
    assert!(
        tiny.contains("installed") && tiny.contains("fits"),
        "{tiny}"
    );
    let out = common::lcode()
        .args(["models", "--ctx", "100000000"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let tiny = text.lines().find(|l| l.starts_with("tiny")).unwrap();
    assert!(tiny.contains("does not fit"), "{tiny}");
}
