//! Every bad input is a one-line error naming the fix and a non-zero exit: never a panic,
//! a hang, or a download.

mod common;

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

fn generate_with(model: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = common::lcode();
    c.args([
        "generate", "--raw", "--greedy", "-n", "2", "--prompt", "hello", "--model",
    ])
    .arg(model)
    .args(extra);
    c.output().unwrap()
}

/// A small GGUF with the given architecture and one tensor of the given type.
fn write_gguf(path: &Path, arch: &str, dtype: GgmlDType) {
    let mut f = std::fs::File::create(path).unwrap();
    let t = Tensor::zeros((32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    let arch_v = Value::String(arch.into());
    let tokens = Value::Array(vec![Value::String("a".into())]);
    let one = Value::U32(1);
    let md: Vec<(&str, &Value)> = vec![
        ("general.architecture", &arch_v),
        ("tokenizer.ggml.tokens", &tokens),
        ("llama.block_count", &one),
        ("llama.embedding_length", &one),
        ("llama.attention.head_count", &one),
        ("llama.feed_forward_length", &one),
        ("llama.context_length", &one),
    ];
    gguf_file::write(&mut f, &md, &[("token_embd.weight", &q)]).unwrap();
}

#[test]
fn a_missing_model_path_is_an_error_never_a_download() {
    let err = common::one_line_error(&generate_with(Path::new("/no/such/model.gguf"), &[]));
    assert!(
        err.contains("no model file at /no/such/model.gguf"),
        "{err}"
    );
}

#[test]
fn an_empty_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.gguf");
    std::fs::write(&p, b"").unwrap();
    let err = common::one_line_error(&generate_with(&p, &[]));
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn a_file_that_is_not_gguf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.gguf");
    std::fs::write(&p, b"just some text, not a model at all").unwrap();
    let err = common::one_line_error(&generate_with(&p, &[]));
    assert!(err.contains("not a GGUF file"), "{err}");
}

#[test]
fn a_truncated_model_is_refused_with_the_fix() {
    let src = common::model("tiny");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.gguf");
    let bytes = std::fs::read(&src).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let err = common::one_line_error(&generate_with(&p, &[]));
    assert!(
        err.contains("truncated") && err.contains("lcode models pull"),
        "{err}"
    );
}

#[test]
fn an_unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mamba.gguf");
    write_gguf(&p, "mamba", GgmlDType::Q8_0);
    let err = common::one_line_error(&generate_with(&p, &[]));
    assert!(
        err.contains("architecture `mamba` is not supported"),
        "{err}"
    );
    // The ones that run, both paths', are named.
    for arch in ["llama", "qwen2", "gemma3", "qwen3", "phi3"] {
        assert!(err.contains(arch), "{arch} missing from: {err}");
    }
}

#[test]
fn an_unsupported_quant_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bf16.gguf");
    write_gguf(&p, "llama", GgmlDType::BF16);
    let err = common::one_line_error(&generate_with(&p, &[]));
    assert!(err.contains("quant type BF16"), "{err}");
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let model = common::model("tiny");
    let long = "word ".repeat(400);
    let mut c = common::lcode();
    c.args([
        "generate", "--raw", "-n", "2", "--ctx", "128", "--prompt", &long, "--model",
    ])
    .arg(&model);
    let err = common::one_line_error(&c.output().unwrap());
    assert!(
        err.contains("working context is 128") && err.contains("--ctx"),
        "{err}"
    );
}

#[test]
fn a_model_that_does_not_fit_is_refused_at_load() {
    let model = common::model("tiny");
    let err = common::one_line_error(&generate_with(&model, &["--ctx", "10000000"]));
    assert!(
        err.contains("does not fit") && err.contains("lower --ctx"),
        "{err}"
    );
}

#[test]
fn a_tier_not_installed_names_models_pull() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::lcode()
        .env("LCODE_MODELS", dir.path())
        .args(["generate", "--model", "quality", "--prompt", "hi"])
        .output()
        .unwrap();
    let err = common::one_line_error(&out);
    assert!(err.contains("lcode models pull quality"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing was downloaded"
    );
}

#[test]
fn unknown_tiers_for_pull_and_rm_are_errors() {
    let out = common::lcode()
        .args(["models", "pull", "huge"])
        .output()
        .unwrap();
    assert!(common::one_line_error(&out).contains("no tier named `huge`"));
    let out = common::lcode()
        .args(["models", "rm", "huge"])
        .output()
        .unwrap();
    assert!(common::one_line_error(&out).contains("the tiers are tiny, fast, quality"));
}
