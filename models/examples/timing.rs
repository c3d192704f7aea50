//! Prefill and decode latency of an exported model directory (`bench/models`).
//!
//! For each KV mode asked for: the prefill of one prompt with an image (vision
//! encoder, embeddings, decoder, last-position logits to the host), then at each batch
//! size, the prompt's cache forked to that many rows and a fixed number of greedy
//! decode steps (token embedding, decoder, the next tokens: chosen on the device in the
//! bound modes, from the logits brought to the host in `host` mode), the first
//! `--warmup` steps not counted. Reports medians, tokens/s and, from the decoder's
//! file size and the cache size, the memory-bandwidth floor of a step.
//!
//! ```text
//! cargo run --release --example timing -p tsst-models -- MODEL_DIR [--device cuda:0]
//!     [--batch 1,16,64] [--steps 32] [--warmup 4] [--prefill-reps 5]
//!     [--kv MODE[:B1/B2..][,..]] [--bandwidth-tbs TBS] [--json FILE] [--temperature 0]
//!     [--prealloc-presents]
//! ```
//! MODE is `default` (the model's: shared for float16 genai decoders on CUDA), `host`,
//! `bound` or `shared`; `host:1/16` times that mode at batch 1 and 16 only.
//! ```text
//! ```
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tsst_messages::{DataSource, Question};
use tsst_models::llava::{Cache, Embeds, Llava, Prefill, Want};
use tsst_models::sampling::{choose, choose_with, Rng};
use tsst_models::{Device, KvMode, OnnxPolicy};

struct Args {
    dir: PathBuf,
    device: Device,
    batches: Vec<usize>,
    steps: usize,
    warmup: usize,
    prefill_reps: usize,
    /// KV modes (None: the model's default) with their own batch sizes, if given.
    modes: Vec<(Option<KvMode>, Option<Vec<usize>>)>,
    /// The card's memory bandwidth, measured in the same call (bench/gpu/bandwidth.py):
    /// without it there is no floor, never an assumed one.
    bandwidth_tbs: Option<f64>,
    json: Option<PathBuf>,
    temperature: f32,
    prealloc: bool,
}

const USAGE: &str = "usage: timing MODEL_DIR [--device cpu|cuda:N] [--batch 1,16,64] [--steps 32] \
[--warmup 4] [--prefill-reps 5] [--kv MODE[:B1/B2..][,...]] (MODE: default|host|bound|shared) [--bandwidth-tbs TBS] [--json FILE] [--temperature 0] [--prealloc-presents]";

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        dir: PathBuf::new(),
        device: Device::Cpu,
        batches: vec![1, 16, 64],
        steps: 32,
        warmup: 4,
        prefill_reps: 5,
        modes: vec![(None, None)],
        bandwidth_tbs: None,
        json: None,
        temperature: 0.0,
        prealloc: false,
    };
    let mut dir = None;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--device" => args.device = value("--device")?.parse()?,
            "--batch" => {
                args.batches = value("--batch")?
                    .split(',')
                    .map(|b| b.trim().parse::<usize>().map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--steps" => args.steps = value("--steps")?.parse().map_err(|e| format!("{e}"))?,
            "--warmup" => args.warmup = value("--warmup")?.parse().map_err(|e| format!("{e}"))?,
            "--prefill-reps" => {
                args.prefill_reps = value("--prefill-reps")?
                    .parse()
                    .map_err(|e| format!("{e}"))?
            }
            "--kv" => {
                args.modes = value("--kv")?
                    .split(',')
                    .map(|m| {
                        let (m, b) = match m.split_once(':') {
                            Some((m, b)) => (m, Some(b)),
                            None => (m, None),
                        };
                        let mode = match m.trim() {
                            "default" => None,
                            m => Some(m.parse::<KvMode>()?),
                        };
                        let batches = b
                            .map(|b| {
                                b.split('/')
                                    .map(|x| x.trim().parse::<usize>().map_err(|e| e.to_string()))
                                    .collect::<Result<Vec<_>, _>>()
                            })
                            .transpose()?;
                        Ok::<_, String>((mode, batches))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--bandwidth-tbs" => {
                args.bandwidth_tbs = Some(
                    value("--bandwidth-tbs")?
                        .parse()
                        .map_err(|e| format!("{e}"))?,
                )
            }
            "--json" => args.json = Some(value("--json")?.into()),
            "--temperature" => {
                args.temperature = value("--temperature")?
                    .parse()
                    .map_err(|e| format!("{e}"))?
            }
            "--prealloc-presents" => args.prealloc = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other if other.starts_with('-') => {
                return Err(format!("unknown option {other}\n{USAGE}"))
            }
            other => dir = Some(PathBuf::from(other)),
        }
    }
    args.dir = dir.ok_or(USAGE)?;
    if args.steps == 0
        || args.batches.contains(&0)
        || args
            .modes
            .iter()
            .any(|(_, b)| b.as_ref().is_some_and(|b| b.contains(&0)))
    {
        return Err("--steps and batch sizes must be positive".into());
    }
    Ok(args)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn argmax(v: &[f32]) -> i64 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as i64
}

/// The question timed: the fixture's golden image when the directory has one, else a
/// generated 640x480 picture.
fn question(dir: &Path) -> Result<Question, String> {
    let golden = dir.join("golden.png");
    let image = if golden.is_file() {
        golden
    } else {
        let path = std::env::temp_dir().join(format!("tsst-timing-{}.png", std::process::id()));
        let img = image::RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
        });
        img.save(&path).map_err(|e| e.to_string())?;
        path
    };
    Ok(Question {
        id: "timing".into(),
        source: DataSource::Aokvqa,
        image: Some(image),
        question: "Which shape in the picture is red, and where is it?".into(),
        choices: vec![
            "the circle, on the left".into(),
            "the square, in the middle".into(),
            "the triangle, on the right".into(),
            "there is no red shape".into(),
        ],
        answer: 0,
        rationales: vec![],
        context: None,
    })
}

/// Bytes of the decoder's weights: its files on disk.
fn decoder_bytes(model: &Llava) -> u64 {
    let file = model.dir.join(&model.manifest.decoder.file);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    size(&file) + size(&PathBuf::from(format!("{}.data", file.display())))
}

struct Prefilled {
    cache: Cache,
    len: usize,
    first: i64,
}

fn prefill(
    model: &mut Llava,
    q: &Question,
    reps: usize,
    out: &mut Vec<serde_json::Value>,
    mode: KvMode,
) -> Result<Prefilled, Box<dyn std::error::Error>> {
    let mut vision = Vec::new();
    let mut total = Vec::new();
    let mut last = None;
    for rep in 0..=reps {
        model.forget_features();
        let t0 = Instant::now();
        let prompt = model
            .prompts(&[(q, "")])?
            .pop()
            .ok_or("no prompt")?
            .map_err(|e| e.to_string())?;
        let t_vision = ms(t0);
        let embedded = model.embed_prompts(&[&prompt])?;
        let pre = Prefill::new(&embedded, model.hidden_size());
        let past = model.empty_caches(1)?;
        let len = pre.lens[0];
        let run = model.decode(
            1,
            Embeds::Host(pre.embeds),
            pre.mask,
            pre.positions,
            past,
            false,
            Want::Rows(&[(0, len - 1)]),
        )?;
        if rep > 0 {
            vision.push(t_vision);
            total.push(ms(t0));
        }
        last = Some(Prefilled {
            first: argmax(&run.picked[0]),
            cache: run.presents,
            len,
        });
    }
    let p = last.ok_or("no prefill")?;
    let line = serde_json::json!({
        "what": "prefill", "mode": format!("{mode:?}").to_lowercase(), "prompt_len": p.len,
        "reps": reps, "median_ms": median(&total), "vision_median_ms": median(&vision),
    });
    println!(
        "PREFILL mode={:<6} prompt_len={} median_ms={:.2} (vision encoder {:.2}) reps={reps}",
        format!("{mode:?}").to_lowercase(),
        p.len,
        median(&total),
        median(&vision)
    );
    out.push(line);
    Ok(p)
}

#[allow(clippy::too_many_arguments)]
fn decode(
    model: &mut Llava,
    p: &Prefilled,
    batch: usize,
    args: &Args,
    mode: KvMode,
    weights: u64,
    out: &mut Vec<serde_json::Value>,
) -> Result<Vec<i64>, Box<dyn std::error::Error>> {
    let d = model.manifest.decoder.clone();
    let total_steps = args.warmup + args.steps;
    let shared = mode == KvMode::Shared;
    let width = if shared { p.len + total_steps } else { p.len };
    let picks = vec![(0usize, 0usize); batch];
    let t_fork = Instant::now();
    let mut cache = model.gather(std::slice::from_ref(&p.cache), &picks, width)?;
    let fork_ms = ms(t_fork);
    let mut ids = vec![p.first; batch];
    let mut generated = vec![p.first];
    let (mut step_ms, mut argmax_ms, mut choose_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut rngs: Vec<Rng> = (0..batch as u64).map(Rng::new).collect();
    // Generators for the timed-apart host sampling, so it leaves `rngs` alone.
    let mut spare: Vec<Rng> = (0..batch as u64).map(|r| Rng::new(r + 1_000_003)).collect();
    let on_device = mode.on_device();
    let temperature = vec![args.temperature; batch];
    let rows_at: Vec<(usize, usize)> = (0..batch).map(|r| (r, 0)).collect();
    for k in 0..total_steps {
        let t0 = Instant::now();
        if k == args.warmup {
            model.take_step_times();
        }
        let w = p.len + k + 1;
        // On the device the tokens are chosen there (greedy at temperature 0); on the
        // host the logits come back and the argmax is taken here.
        let uniform: Vec<f32> = rngs.iter_mut().map(|r| r.next_f64() as f32).collect();
        let want = if on_device {
            Want::Sample {
                temperature: &temperature,
                uniform: &uniform,
            }
        } else {
            Want::Rows(&rows_at)
        };
        let run = model.decode(
            batch,
            Embeds::Ids(ids.clone()),
            vec![1; batch * w],
            vec![(p.len + k) as i64; batch],
            std::mem::take(&mut cache),
            shared,
            want,
        )?;
        let t_step = ms(t0);
        cache = run.presents;
        let t1 = Instant::now();
        if on_device {
            for (r, c) in run.choices.iter().enumerate() {
                ids[r] = c.token;
            }
        } else {
            for (r, row) in run.picked.iter().enumerate() {
                ids[r] = if args.temperature > 0.0 {
                    // The same draw the device would have used.
                    choose_with(row, f64::from(args.temperature), || f64::from(uniform[r])).token
                } else {
                    argmax(row)
                };
            }
        }
        let t_argmax = ms(t1);
        // What the host-side sampling costs per step (temperature 1, log-probability
        // over the whole vocabulary), timed apart and not used: the host path does this.
        let t2 = Instant::now();
        for (row, rng) in run.picked.iter().zip(&mut spare) {
            std::hint::black_box(choose(row, 1.0, rng));
        }
        let t_choose = ms(t2);
        generated.push(ids[0]);
        if k >= args.warmup {
            step_ms.push(t_step);
            argmax_ms.push(t_argmax);
            choose_ms.push(t_choose);
        }
    }
    drop(cache);
    // Host-side ms a step around the decoder's kernels (shared-buffer steps only).
    let [inputs, bind, run, sample] = model.take_step_times().per_step();
    let elem = match model.manifest.dtype {
        tsst_models::manifest::Dtype::Float16 => 2,
        tsst_models::manifest::Dtype::Float32 => 4,
    };
    // Cache bytes read per step at the mean past length of the timed steps.
    let past = p.len as f64 + args.warmup as f64 + (args.steps as f64 - 1.0) / 2.0;
    let kv = batch as f64
        * d.num_layers as f64
        * 2.0
        * (d.num_kv_heads * d.head_dim * elem) as f64
        * past;
    let floor_ms = args
        .bandwidth_tbs
        .map(|tbs| (weights as f64 + kv) / (tbs * 1e12) * 1e3);
    let floor_text = floor_ms.map_or("n/a (no --bandwidth-tbs)".to_string(), |f| {
        format!("{f:.3}")
    });
    let step = median(&step_ms);
    let tok_s = batch as f64 / (step / 1e3);
    let name = format!("{mode:?}").to_lowercase();
    let choose_note = if on_device {
        "on device".to_string()
    } else {
        format!("{:.3}", median(&choose_ms))
    };
    println!(
        "DECODE  mode={name:<6} batch={batch:<3} past={}..{} step_median_ms={step:.3} tok_s={tok_s:.0} \
host_ms(inputs/bind/run/sample)={inputs:.3}/{bind:.3}/{run:.3}/{sample:.3} host_pick_ms={:.3} host_choose_ms={choose_note} fork_ms={fork_ms:.2} floor_ms={floor_text} ratio={}",
        p.len + args.warmup,
        p.len + total_steps,
        median(&argmax_ms),
        floor_ms.map_or("n/a".to_string(), |f| format!("{:.2}", step / f)),
    );
    println!("IDS     mode={name:<6} batch={batch:<3} row0={generated:?}");
    out.push(serde_json::json!({
        "what": "decode", "mode": name, "batch": batch, "steps": args.steps, "warmup": args.warmup,
        "past_from": p.len + args.warmup, "past_to": p.len + total_steps,
        "step_median_ms": step, "step_min_ms": step_ms.iter().copied().fold(f64::INFINITY, f64::min),
        "tokens_per_s": tok_s,
        "step_host_ms": {"inputs": inputs, "bind": bind, "run": run, "sample": sample},
        "host_pick_median_ms": median(&argmax_ms),
        "host_choose_median_ms": if on_device { serde_json::Value::Null } else { median(&choose_ms).into() },
        "sampled_on_device": on_device, "temperature": args.temperature, "fork_ms": fork_ms,
        "weights_bytes": weights, "kv_bytes_mean": kv, "floor_ms": floor_ms,
        "bandwidth_tbs": args.bandwidth_tbs, "ratio": floor_ms.map(|f| step / f), "row0_ids": generated,
    }));
    Ok(generated)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let mut policy = OnnxPolicy::load(&args.dir, args.device, None)?;
    let model = policy.model();
    let d = model.manifest.decoder.clone();
    let weights = decoder_bytes(model);
    let default = model.kv_mode();
    model.set_prealloc_presents(args.prealloc);
    println!(
        "MODEL   dir={} device={} dtype={:?} route={:?} layers={} hidden={} kv_heads={} head_dim={} \
vocab={} decoder_bytes={weights} default_kv={default:?} load_s={:.1} ort={}",
        args.dir.display(),
        args.device,
        model.manifest.dtype,
        d.route,
        d.num_layers,
        d.hidden_size,
        d.num_kv_heads,
        d.head_dim,
        d.vocab_size,
        t.elapsed().as_secs_f64(),
        tsst_models::ort_lib::loaded_from()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    let q = question(&args.dir)?;
    let mut out = Vec::new();
    let mut ids: Vec<(KvMode, usize, Vec<i64>)> = Vec::new();
    for (mode, batches) in &args.modes {
        let mode = mode.unwrap_or(default);
        model.set_kv_mode(mode)?;
        let p = prefill(model, &q, args.prefill_reps, &mut out, mode)?;
        for &batch in batches.as_ref().unwrap_or(&args.batches) {
            match decode(model, &p, batch, args, mode, weights, &mut out) {
                Ok(g) => ids.push((mode, batch, g)),
                Err(e) => {
                    println!("DECODE  mode={mode:?} batch={batch} FAILED: {e}");
                    out.push(serde_json::json!({"what": "decode", "mode": format!("{mode:?}").to_lowercase(),
                        "batch": batch, "error": e.to_string()}));
                }
            }
        }
    }
    // Greedy ids of row 0 agree across modes and batch sizes? (float16 may flip
    // near-ties; the first divergence is printed.)
    if let Some((m0, b0, first)) = ids.first() {
        for (m, b, g) in &ids[1..] {
            let same = g.iter().zip(first).take_while(|(a, b)| a == b).count();
            println!(
                "AGREE   {m:?}/batch {b} vs {m0:?}/batch {b0}: first {same} of {} ids equal",
                g.len().min(first.len())
            );
        }
    }
    if let Some(path) = &args.json {
        let mut f = std::fs::File::create(path)?;
        for line in out {
            writeln!(f, "{line}")?;
        }
    }
    Ok(())
}
