//! `adpq generate`: text from a Llama-architecture model, token by token on the packed
//! weights of an adpq checkpoint (or on the input model's dense weights), through
//! [`adpq_eval::decode::Decoder`]. Prints the prompt and the generated text on stdout as
//! it comes, and the prompt's and the generation's tokens per second on stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use adpq_core::kernels::AnyKernels;
use adpq_core::CpuKernels;
use adpq_eval::decode::{Decoder, Steps};
use adpq_eval::{LlamaConfig, Model, TextTokenizer};
use adpq_io::Checkpoint;
use clap::Args;

use crate::eval::err;
use crate::{pool, RunArgs};

/// The arguments of `adpq generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The model: a folder with config.json, tokenizer.json and the weights (or a
    /// .safetensors file in such a folder).
    #[arg(long)]
    model: PathBuf,
    /// An adpq checkpoint of the model: generate on its packed weights instead of the
    /// model's own.
    #[arg(long, value_name = "CHECKPOINT")]
    quantized: Option<PathBuf>,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "tokens", default_value_t = 32)]
    tokens: usize,
    /// Sample from the K most likely tokens (0: greedy, the most likely token each step).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Temperature of the sampling (with --top-k; 0 is greedy).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// config.json, when not beside the model.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// tokenizer.json, when not beside the model.
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
    /// Read the packed rows as they are instead of a copy repacked for the int8 gemv at
    /// load (the same tokens; about half the weights' memory, slower).
    #[arg(long)]
    no_repack: bool,
    #[command(flatten)]
    run: RunArgs,
}

/// `adpq generate`.
pub fn run(a: GenerateArgs) -> Result<()> {
    if !a.temperature.is_finite() || a.temperature < 0.0 {
        return Err(Error::Usage(format!(
            "--temperature {}: must be a number at least 0",
            a.temperature
        )));
    }
    let kernels = match a.run.backend.as_str() {
        "cuda" => {
            return Err(Error::Usage(
                "--backend cuda: generate runs on the CPU (auto, scalar, avx2, avx-vnni, neon)"
                    .into(),
            ))
        }
        name => AnyKernels::by_name(name).map_err(|e| Error::Usage(e.to_string()))?,
    };
    let dir = if a.model.is_dir() {
        a.model.clone()
    } else {
        a.model.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let config_path = a.config.clone().unwrap_or_else(|| dir.join("config.json"));
    let tok_path = a
        .tokenizer
        .clone()
        .unwrap_or_else(|| dir.join("tokenizer.json"));
    let config = LlamaConfig::from_file(&config_path).map_err(err(&config_path))?;
    let tokenizer = TextTokenizer::from_file(&tok_path).map_err(err(&tok_path))?;
    let prompt = tokenizer.encode(&a.prompt).map_err(err(&tok_path))?;
    if prompt.is_empty() {
        return Err(Error::Usage("--prompt: no tokens".into()));
    }
    let weights = a.quantized.as_ref().unwrap_or(&a.model);
    let ckpt = Checkpoint::open(weights)?;
    let mut model = Model::load(config, &ckpt).map_err(err(weights))?;
    // The SIMD int8 gemv reads v3 rows faster repacked (the same bits); the scalar
    // oracle reads the packed rows.
    if !a.no_repack && !matches!(kernels, AnyKernels::Scalar(_)) {
        model.repack_for_decoding().map_err(err(weights))?;
    }
    let pool = pool(a.run.threads)?;
    let threads = pool.current_num_threads();
    let stats = pool.install(|| generate(&a, &model, kernels, &tokenizer, &prompt))?;
    if !a.run.quiet {
        eprintln!(
            "adpq: prompt {} tokens in {:.2} s ({:.1} tokens/s); generated {} tokens in {:.2} s \
             ({:.1} tokens/s); {} thread(s), backend {}, weights {}",
            prompt.len(),
            stats.prompt_s,
            prompt.len() as f64 / stats.prompt_s.max(1e-9),
            stats.generated,
            stats.generate_s,
            stats.generated as f64 / stats.generate_s.max(1e-9),
            threads,
            kernels.name(),
            weights.display()
        );
    }
    Ok(())
}

/// Timings of a run.
struct Stats {
    prompt_s: f64,
    generate_s: f64,
    generated: usize,
}

/// Feeds the prompt, then generates, printing the text as it comes.
fn generate(
    a: &GenerateArgs,
    model: &Model<'_>,
    kernels: AnyKernels,
    tokenizer: &TextTokenizer,
    prompt: &[u32],
) -> Result<Stats> {
    let mut decoder =
        Decoder::new(model, kernels, prompt.len() + a.tokens).map_err(err(&a.model))?;
    // The decoding threads stay for the whole generation.
    decoder.with_team(|steps| generate_on(a, steps, tokenizer, prompt))
}

/// [`generate`] on a decoder's steps.
fn generate_on<K: CpuKernels>(
    a: &GenerateArgs,
    decoder: &mut Steps<'_, '_, K>,
    tokenizer: &TextTokenizer,
    prompt: &[u32],
) -> Result<Stats> {
    let mut sampler = Sampler::new(a.top_k, a.temperature, a.seed);
    let t0 = Instant::now();
    let mut next = 0;
    for &tok in prompt {
        next = sampler.pick(decoder.step(tok).map_err(err(&a.model))?);
    }
    let prompt_s = t0.elapsed().as_secs_f64();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let write = |out: &mut dyn Write, text: &str| -> Result<()> {
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(Error::stdout)
    };
    write(&mut out, &a.prompt)?;
    // Text is decoded from all generated tokens each time and only the new suffix
    // printed: a token may end in the middle of a UTF-8 character.
    let (mut generated, mut shown) = (Vec::with_capacity(a.tokens), 0);
    let t1 = Instant::now();
    let mut generate_s = 0.0;
    for i in 0..a.tokens {
        crate::signals::check()?;
        generated.push(next);
        let text = tokenizer.decode(&generated).map_err(err(&a.model))?;
        if text.len() > shown && text.is_char_boundary(shown) && !text.ends_with('\u{FFFD}') {
            write(&mut out, &text[shown..])?;
            shown = text.len();
        }
        if i + 1 < a.tokens {
            next = sampler.pick(decoder.step(next).map_err(err(&a.model))?);
        }
        generate_s = t1.elapsed().as_secs_f64();
    }
    write(&mut out, "\n")?;
    Ok(Stats {
        prompt_s,
        generate_s,
        generated: generated.len(),
    })
}

/// Picks the next token from logits: greedy, or top-k sampling at a temperature.
struct Sampler {
    top_k: usize,
    temperature: f32,
    rng: fastrand::Rng,
}

impl Sampler {
    fn new(top_k: usize, temperature: f32, seed: u64) -> Sampler {
        Sampler {
            top_k,
            temperature,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.top_k <= 1 || self.temperature == 0.0 {
            return argmax(logits);
        }
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = self.top_k.min(idx.len());
        idx.select_nth_unstable_by(k - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
        idx.truncate(k);
        let m = logits[argmax(logits) as usize];
        let weights: Vec<f64> = idx
            .iter()
            .map(|&i| f64::from((logits[i as usize] - m) / self.temperature).exp())
            .collect();
        let mut r = self.rng.f64() * weights.iter().sum::<f64>();
        for (&i, &w) in idx.iter().zip(&weights) {
            if r < w {
                return i;
            }
            r -= w;
        }
        idx[k - 1]
    }
}

/// The index of the largest logit (the first of equals).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}
