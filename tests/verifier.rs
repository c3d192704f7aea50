//! The LLM verifier against a small local server that speaks the OpenAI
//! chat-completions protocol: retries, Retry-After, timeouts, rejections, odd replies,
//! an outage in the middle of a run, an endpoint that flaps (503s, dropped
//! connections), and a key that never reaches the logs.
use serde_json::Value;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tsst_actors::llm::{LlmClient, LlmError, LlmSettings};
use tsst_labels::ChatMessage;

const KEY: &str = "sk-test-SECRET-0123456789abcdef";

/// A scripted reply: status, extra headers, body, delay before answering.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    content: String,
    delay: Duration,
    /// The reply's `finish_reason`: `"length"` when cut at `max_tokens`.
    finish: &'static str,
}

impl Reply {
    fn ok(content: &str) -> Self {
        Reply {
            status: 200,
            headers: vec![],
            content: content.into(),
            delay: Duration::ZERO,
            finish: "stop",
        }
    }
    fn status(status: u16) -> Self {
        Reply {
            status,
            ..Reply::ok("")
        }
    }
}

#[derive(Default)]
struct Server {
    script: Mutex<VecDeque<Reply>>,
    /// Every request: (authorization header, body JSON).
    seen: Mutex<Vec<(String, Value)>>,
    /// Warm-up chains written so far.
    chains: std::sync::atomic::AtomicUsize,
    /// Flapping: now and then a 503, or the connection dropped without a reply.
    flap: bool,
}

impl Server {
    /// Answers a warm-up request like a chain writer: a chain takes 100 tokens, so a
    /// smaller budget cuts it before its final answer; within budget, the k-th chain is
    /// right, wrong, cut, or answerless in turn.
    fn chain(&self, body: &Value) -> Reply {
        let user = body["messages"][1]["content"].as_str().unwrap_or("");
        let correct = user
            .lines()
            .find_map(|l| l.strip_prefix("Correct answer: "))
            .and_then(|rest| rest.bytes().next())
            .unwrap_or(b'A');
        let options = user
            .lines()
            .filter(|l| l.len() > 2 && l.as_bytes()[1] == b'.')
            .count() as u8;
        let wrong = b'A' + (correct - b'A' + 1) % options.max(2);
        let cut = Reply {
            finish: "length",
            ..Reply::ok("Step 1: The image shows a street. Step 2: The man")
        };
        if body["max_tokens"].as_u64().unwrap_or(0) < 100 {
            return cut;
        }
        let k = self
            .chains
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match k % 4 {
            0 => Reply::ok(&format!(
                "Step 1: The image shows a street. Step 2: It fits the question. Final Answer: ({})",
                correct as char
            )),
            1 => Reply::ok(&format!(
                "Step 1: The image shows a street. Final Answer: ({})",
                wrong as char
            )),
            2 => cut,
            _ => Reply::ok("Step 1: The image shows a street. Step 2: Hard to say."),
        }
    }

    /// Answers like a judge: True when the response names the correct option's text,
    /// and now and then neither True nor False.
    fn judge(&self, body: &Value) -> Reply {
        let user = body["messages"][1]["content"].as_str().unwrap_or("");
        let field = |name: &str| {
            user.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("")
                .trim()
                .to_owned()
        };
        let correct = field("Correct answer:");
        let text = correct
            .split_once(". ")
            .map_or("", |(_, t)| t)
            .to_lowercase();
        let response = field("Response:").to_lowercase();
        let n = self.seen.lock().unwrap().len();
        if n % 7 == 3 {
            return Reply::ok("I cannot tell from this.");
        }
        Reply::ok(if !text.is_empty() && response.contains(&text) {
            "True"
        } else {
            "**False**"
        })
    }
}

async fn serve(listener: TcpListener, server: Arc<Server>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let _ = handle(stream, server).await;
        });
    }
}

async fn handle(mut stream: TcpStream, server: Arc<Server>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: Value = serde_json::from_slice(&buf[header_end..]).unwrap_or(Value::Null);
    let n = server.seen.lock().unwrap().len();
    if server.flap && n % 9 == 4 {
        server
            .seen
            .lock()
            .unwrap()
            .push(("dropped".into(), Value::Null));
        return Ok(());
    }
    let reply = {
        let scripted = server.script.lock().unwrap().pop_front();
        let warmup = body["messages"][0]["content"]
            .as_str()
            .is_some_and(|s| s.contains("step-by-step reasoning"));
        scripted.unwrap_or_else(|| {
            if server.flap && n % 5 == 1 {
                Reply::status(503)
            } else if warmup {
                server.chain(&body)
            } else {
                server.judge(&body)
            }
        })
    };
    server
        .seen
        .lock()
        .unwrap()
        .push((header("authorization"), body));
    tokio::time::sleep(reply.delay).await;
    let payload = if reply.status == 200 {
        serde_json::json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content}, "finish_reason": reply.finish}],
        })
        .to_string()
    } else {
        serde_json::json!({"error": {"message": "scripted failure"}}).to_string()
    };
    let mut response = format!(
        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        payload.len()
    );
    for (k, v) in &reply.headers {
        response.push_str(&format!("{k}: {v}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&payload);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn start(script: Vec<Reply>) -> (String, Arc<Server>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let server = Arc::new(Server {
        script: Mutex::new(script.into()),
        ..Server::default()
    });
    tokio::spawn(serve(listener, server.clone()));
    (url, server)
}

fn settings(url: &str) -> LlmSettings {
    LlmSettings {
        base_url: url.into(),
        model: "test-judge".into(),
        temperature: 0.0,
        max_tokens: 8,
        concurrency: 4,
        timeout: Duration::from_millis(800),
        max_retries: 4,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
    }
}

fn ask() -> Vec<ChatMessage> {
    tsst_labels::llm_messages("How many?", &["1".into(), "2".into()], 1, "2")
}

#[tokio::test]
async fn retries_429_and_5xx_honouring_retry_after() {
    let mut limited = Reply::status(429);
    limited.headers.push(("Retry-After".into(), "1".into()));
    let (url, server) = start(vec![limited, Reply::status(503), Reply::ok("True")]).await;
    let client = LlmClient::new(settings(&url), Some(KEY.into())).unwrap();
    let started = Instant::now();
    assert_eq!(client.chat(&ask()).await.unwrap(), "True");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].0, format!("Bearer {KEY}"));
    assert_eq!(seen[2].1["model"], "test-judge");
    assert_eq!(seen[2].1["messages"][0]["role"], "system");
}

#[tokio::test]
async fn timeouts_are_retried() {
    let mut slow = Reply::ok("True");
    slow.delay = Duration::from_secs(3);
    let (url, server) = start(vec![slow, Reply::ok("False")]).await;
    let client = LlmClient::new(settings(&url), None).unwrap();
    assert_eq!(client.chat(&ask()).await.unwrap(), "False");
    assert_eq!(server.seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_rejected_request_is_not_retried_and_the_key_stays_secret() {
    let (url, server) = start(vec![Reply::status(401)]).await;
    let client = LlmClient::new(settings(&url), Some(KEY.into())).unwrap();
    let err = client.chat(&ask()).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Rejected { status: 401, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains(KEY));
    assert!(!format!("{err:?}").contains(KEY));
    assert_eq!(server.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_dead_endpoint_is_retried_then_reported() {
    // Bind and drop: nothing listens on the port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Credentials in the base URL (a proxy's) are secrets too.
    let client = LlmClient::new(
        settings(&format!("http://judge:url-secret-42@127.0.0.1:{port}/v1")),
        Some(KEY.into()),
    )
    .unwrap();
    let err = client.chat(&ask()).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("5 attempts"), "{err}");
    assert!(!err.to_string().contains(KEY));
    assert!(!err.to_string().contains("url-secret-42"), "{err}");
    assert!(err.to_string().contains("judge:***@127.0.0.1"), "{err}");
}

/// The `tsst` binary next to this test (built by `cargo test --workspace`).
fn tsst_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().join("tsst")
}

fn tsst(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(tsst_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("TSST_AMQP_URL")
        .env_remove("TSST_REDIS_URL")
        .output()
        .unwrap()
}

/// Distinct non-root prefixes of the verified solutions of a question with at least one
/// correct one: the Dv records the tree implies.
fn implied_value_nodes(solutions: &[Value]) -> usize {
    let mut prefixes = std::collections::BTreeSet::new();
    let mut any_correct = false;
    for s in solutions {
        let steps: Vec<String> = s["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect();
        if !steps.join(" ").to_lowercase().contains("final answer") || s["verdict"].is_null() {
            continue;
        }
        any_correct |= s["verdict"]["correct"].as_bool().unwrap();
        for i in 1..=steps.len() {
            prefixes.insert(steps[..i].to_vec());
        }
    }
    if any_correct {
        prefixes.len()
    } else {
        0
    }
}

#[tokio::test]
async fn a_run_survives_an_outage_and_a_flapping_endpoint_and_writes_training_data() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out = tsst(
        &[
            "data", "synth", "--out", "synth", "--n", "60", "--seed", "3",
        ],
        root,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A port with nothing on it: the endpoint refuses connections until it starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        root.join("verifier.yaml"),
        format!(
            "model: test-judge\ntemp_llm: 0\nmax_new_tokens: 8\nconfig:\n  openai_api_base: http://127.0.0.1:{port}/v1\n  api_key_env: TSST_TEST_VERIFIER_KEY\n  timeout_secs: 2\n  max_retries: 1\n  backoff_base_ms: 50\n  backoff_max_ms: 300\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("eval.yaml"),
        "task: multiple_choice_steps_beam\ndataset_name: aokvqa\ndataset_root: synth\ndata_subset: train\ndata_partition: '0_29'\nseed: 5\nnum_beams: 3\nbranch: 2\nn_consistency: 4\ntemperature: 0.7\nmodels:\n  - policy_model: scripted\n    value_model: scripted\n    tag: judge\n    run_flag: true\n    use_value: true\n",
    )
    .unwrap();
    let log = std::fs::File::create(root.join("run.log")).unwrap();
    let mut child = Command::new(tsst_bin())
        .args([
            "run",
            "--config",
            "eval.yaml",
            "--verifier",
            "verifier.yaml",
            "--out",
            "runs",
            "--quiet",
        ])
        .current_dir(root)
        .env("TSST_TEST_VERIFIER_KEY", KEY)
        .env("RUST_LOG", "debug,lapin=warn,hyper=warn,reqwest=debug")
        .env_remove("TSST_AMQP_URL")
        .env_remove("TSST_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run waits for the endpoint"
    );
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = Arc::new(Server {
        flap: true,
        ..Server::default()
    });
    tokio::spawn(serve(listener, server.clone()));

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "run did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let logs = std::fs::read_to_string(root.join("run.log")).unwrap();
    assert!(status.success(), "{logs}");
    assert!(!logs.contains(KEY), "the key reached the logs");
    assert!(logs.contains("postponed"), "the outage was seen:\n{logs}");

    let seen = server.seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the LLM decided what the rule could not");
    assert!(
        seen.iter().filter(|(auth, _)| auth == "dropped").count() > 0,
        "the endpoint flapped"
    );
    assert!(seen
        .iter()
        .all(|(auth, _)| auth == &format!("Bearer {KEY}") || auth == "dropped"));

    let folder = root.join("runs/eval-judge");
    let results: Vec<Value> = std::fs::read_to_string(folder.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 30);
    let (mut by_llm, mut unsure_cached, mut want_dplus, mut want_dv) = (0, 0, 0, 0);
    for r in &results {
        assert_eq!(r["status"], "done", "{r}");
        let solutions = r["solutions"].as_array().unwrap();
        assert!(!solutions.is_empty());
        for s in solutions {
            let v = &s["verdict"];
            assert!(v.is_object(), "every solution verified: {s}");
            by_llm += usize::from(v["by"] == "llm" || v["by"] == "cache");
            unsure_cached += usize::from(v["by"] == "cache" && v["note"] == "unparsable");
        }
        want_dplus += usize::from(solutions.iter().any(|s| {
            s["verdict"]["correct"] == true
                && s["text"]
                    .as_str()
                    .unwrap()
                    .to_lowercase()
                    .contains("final answer")
        }));
        want_dv += implied_value_nodes(solutions);
    }
    assert!(by_llm > 0, "some answers needed the LLM");
    assert_eq!(
        unsure_cached, 0,
        "a reply that is neither True nor False is asked again, never cached"
    );

    let read = |name: &str| -> Vec<Value> {
        serde_json::from_str(&std::fs::read_to_string(folder.join(name)).unwrap()).unwrap()
    };
    let (dplus, dv) = (read("dplus.json"), read("dv.json"));
    assert_eq!(dplus.len(), want_dplus);
    assert_eq!(dv.len(), want_dv);
    for rec in dplus.iter().chain(&dv) {
        let turns = rec["conversations"].as_array().unwrap();
        assert_eq!(turns[0]["from"], "human");
        assert!(turns[0]["value"].as_str().unwrap().starts_with("<image>\n"));
        assert_eq!(turns[1]["from"], "gpt");
        assert!(rec["image"].as_str().unwrap().starts_with("train2017/"));
    }
    assert!(dv.iter().all(|r| r["value"]
        .as_f64()
        .is_some_and(|v| (0.0..=1.0).contains(&v))));
}

/// The fixture's A-OKVQA questions, an eval config and a verifier config whose judge
/// budget is 8 tokens, in a fresh folder; the endpoint at `url`.
fn warmup_folder(url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aokvqa");
    std::fs::write(
        dir.path().join("verifier.yaml"),
        format!("model: test-judge\ntemp_llm: 0\nmax_new_tokens: 8\nconfig:\n  openai_api_base: {url}\n  timeout_secs: 5\n  max_retries: 0\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("eval.yaml"),
        format!("task: multiple_choice_steps_beam\ndataset_name: aokvqa\ndataset_root: {}\ndata_subset: val\nmodels:\n  - policy_model: scripted\n    value_model: scripted\n    tag: w\n", fixture.display()),
    )
    .unwrap();
    dir
}

fn warmup(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "warmup",
        "--config",
        "eval.yaml",
        "--split",
        "val",
        "--llm",
        "verifier.yaml",
        "--out",
        "w",
    ];
    args.extend_from_slice(extra);
    tsst(&args, dir)
}

// The tsst process blocks this thread: the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_chains_have_their_own_budget_and_say_why_they_were_dropped() {
    let (url, server) = start(vec![]).await;
    let dir = warmup_folder(&url);
    let out = warmup(dir.path(), &["--samples", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 6 questions x 2 samples: right, wrong, cut and answerless in turn.
    assert!(
        stdout.contains("3 chains kept, 9 dropped (3 wrong answer, 3 no final answer, 3 cut at the token budget, 0 undecided)"),
        "{stdout}"
    );
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 12);
    for (_, body) in &seen {
        assert_eq!(body["max_tokens"], 768, "not the judge's budget: {body}");
        assert_eq!(body["temperature"], 0.7, "two samples are sampled: {body}");
    }
    let policy: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("w/warmup_policy.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(policy.len(), 3);
}

// The tsst process blocks this thread: the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warmup_that_keeps_nothing_fails_and_says_why() {
    let (url, server) = start(vec![]).await;
    let dir = warmup_folder(&url);
    // Greedy duplicates are refused before any request.
    let out = warmup(dir.path(), &["--samples", "3", "--temperature", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("identical greedy chains"));
    assert!(server.seen.lock().unwrap().is_empty());

    // A judge-sized budget cuts every chain.
    let out = warmup(dir.path(), &["--max-new-tokens", "16"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("no chain was kept out of 6: 6 chains were cut at the token budget: raise --max-new-tokens"),
        "{stderr}"
    );
    let seen = server.seen.lock().unwrap().clone();
    assert!(seen
        .iter()
        .all(|(_, b)| b["max_tokens"] == 16 && b["temperature"] == 0.0));
}

/// An endpoint that refuses every request (a wrong key, a wrong model name) stops the
/// verifier role with the reason instead of postponing its questions forever, and the
/// run exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_endpoint_stops_the_run_with_the_reason() {
    let (url, server) = start(vec![Reply::status(401); 1000]).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out = tsst(
        &[
            "data", "synth", "--out", "synth", "--n", "20", "--seed", "3",
        ],
        root,
    );
    assert!(out.status.success());
    std::fs::write(
        root.join("verifier.yaml"),
        format!("model: test-judge\ntemp_llm: 0\nmax_new_tokens: 8\nconfig:\n  openai_api_base: {url}\n  timeout_secs: 2\n  max_retries: 1\n  backoff_base_ms: 50\n  backoff_max_ms: 300\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("eval.yaml"),
        "task: multiple_choice_steps_beam\ndataset_name: aokvqa\ndataset_root: synth\ndata_subset: train\nseed: 5\nnum_beams: 3\nbranch: 2\nn_consistency: 4\ntemperature: 0.7\nmodels:\n  - policy_model: scripted\n    value_model: scripted\n    tag: judge\n",
    )
    .unwrap();
    let started = Instant::now();
    let out = tsst(
        &[
            "run",
            "--config",
            "eval.yaml",
            "--verifier",
            "verifier.yaml",
            "--quiet",
        ],
        root,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert!(stderr.contains("a role stopped"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(!server.seen.lock().unwrap().is_empty());
}
