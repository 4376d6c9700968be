//! llama.cpp's quantizer as a peer: fake-quantize a weight matrix with one of
//! llama.cpp's types (Q4_0, IQ4_NL, Q4_K, ...) so a sweep can put them beside adpq on
//! the same model and text.
//!
//! The work is done by `llama_quant` (`peers/llama-quant/llama_quant.c`, built against
//! ggml's own sources by `scripts/llama-peer.sh`), run as a child process: the weights
//! go in on stdin, the dequantized weights come back on stdout, and one line on stderr
//! gives the type actually used and the bytes of a quantized row. No importance matrix,
//! as `llama-quantize` without `--imatrix`. A width the type's block does not divide
//! gets llama.cpp's fallback type (e.g. Q4_K -> Q5_0 on 576-wide rows), reported in
//! [`PeerQuantized::type_used`] and counted in its bits per weight.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variable naming the `llama_quant` binary; without it
/// [`LlamaPeer::find`] looks where `scripts/llama-peer.sh` puts it.
pub const TOOL_ENV: &str = "ADPQ_LLAMA_QUANT";

/// What running the peer can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The tool is not where it was looked for.
    #[error("llama.cpp peer not found at {} (build it with scripts/llama-peer.sh, or set {TOOL_ENV})", path.display())]
    NotBuilt {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The weights are not `rows × cols` values, or a dimension is zero.
    #[error("{len} weights cannot be a {rows}×{cols} matrix")]
    Shape {
        /// Number of weights given.
        len: usize,
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
    },
    /// The tool could not be started or talked to.
    #[error("{}: {source}", path.display())]
    Io {
        /// The tool.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The tool refused the request or failed (its stderr says why).
    #[error("llama.cpp peer failed ({status}): {stderr}")]
    Failed {
        /// The tool's exit status.
        status: std::process::ExitStatus,
        /// What it wrote on stderr.
        stderr: String,
    },
    /// The tool's output is not what this module expects (a version mismatch?).
    #[error("llama.cpp peer: unexpected output: {0}")]
    Output(String),
    /// [`tensor_type`] knows no such whole-model type.
    #[error("llama.cpp model type {0} is not mirrored here (try Q4_0, IQ4_NL, IQ4_XS, Q4_K_S, Q4_K_M, ...)")]
    ModelType(String),
}

/// A weight matrix after a round trip through a llama.cpp type.
#[derive(Debug, Clone)]
pub struct PeerQuantized {
    /// The dequantized weights, row-major like the input.
    pub weights: Vec<f32>,
    /// Bits per weight of the quantized matrix: 8 × bytes per row / columns, exact.
    pub bits_per_weight: f64,
    /// ggml's name of the type llama.cpp used: the type asked for, or its fallback.
    pub type_used: String,
    /// Seconds ggml spent quantizing (one thread, excluding the process and the pipes).
    pub quantize_seconds: f64,
}

/// The built `llama_quant` tool.
#[derive(Debug, Clone)]
pub struct LlamaPeer {
    tool: PathBuf,
}

impl LlamaPeer {
    /// Where `scripts/llama-peer.sh` puts the tool: `target/llama-peer/bin/llama_quant`
    /// in this workspace.
    pub fn default_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/llama-peer/bin/llama_quant")
    }

    /// The tool named by [`TOOL_ENV`], else at [`default_path`](Self::default_path);
    /// `None` when it is not there.
    pub fn find() -> Option<Self> {
        let path = std::env::var_os(TOOL_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(Self::default_path);
        Self::at(path).ok()
    }

    /// The tool at `path`; [`PeerError::NotBuilt`] when no file is there.
    pub fn at(path: impl Into<PathBuf>) -> Result<Self, PeerError> {
        let path = path.into();
        if path.is_file() {
            Ok(Self { tool: path })
        } else {
            Err(PeerError::NotBuilt { path })
        }
    }

    /// The tool's path.
    pub fn path(&self) -> &Path {
        &self.tool
    }

    /// Quantizes the row-major `rows × cols` matrix `weights` with llama.cpp's type
    /// `kind` (ggml's name, any case: `Q4_0`, `q8_0`, `IQ4_NL`, `IQ4_XS`, `Q4_K`, ...)
    /// and dequantizes it back.
    pub fn fake_quantize(
        &self,
        kind: &str,
        weights: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<PeerQuantized, PeerError> {
        if rows == 0 || cols == 0 || rows.checked_mul(cols) != Some(weights.len()) {
            return Err(PeerError::Shape {
                len: weights.len(),
                rows,
                cols,
            });
        }
        let io = |source| PeerError::Io {
            path: self.tool.clone(),
            source,
        };
        let mut child = Command::new(&self.tool)
            .args([kind, &rows.to_string(), &cols.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io)?;
        let (stdin, stdout, stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => return Err(PeerError::Output("the child's pipes are missing".into())),
            };
        // The tool reads all its input before it writes, but stderr is drained on its
        // own thread so that no pipe can fill up and stall either side.
        let (sent, output, report) = std::thread::scope(|scope| {
            let report = scope.spawn(move || read_to_end(stderr));
            let output = scope.spawn(move || read_to_end(stdout));
            let sent = send(stdin, weights);
            (sent, output.join(), report.join())
        });
        let status = child.wait().map_err(io)?;
        let joined = |r: std::thread::Result<std::io::Result<Vec<u8>>>| {
            r.map_err(|_| PeerError::Output("a pipe reader panicked".into()))?
                .map_err(io)
        };
        let report = String::from_utf8_lossy(&joined(report)?).into_owned();
        if !status.success() {
            return Err(PeerError::Failed {
                status,
                stderr: report.trim().to_owned(),
            });
        }
        // Only now: a tool that refuses its arguments exits without reading stdin.
        sent.map_err(io)?;
        let bytes = joined(output)?;
        parse(&bytes, &report, rows, cols)
    }
}

/// The ggml type `llama-quantize MODEL_TYPE` (an "ftype": `Q4_0`, `IQ4_NL`, `IQ4_XS`,
/// `Q4_K_S`, `Q4_K_M`, ...) gives the Hugging Face tensor `tensor` (`model.layers.7.
/// mlp.down_proj.weight`) of a Llama-architecture model with `n_layers` layers and
/// `n_gqa` query heads per key/value head, without an importance matrix.
///
/// Mirrors `llama_tensor_get_type_impl` (llama.cpp's `src/llama-quant.cpp`, the pinned
/// version) for dense Llama models and these model types: most tensors get the model
/// type's base type, but e.g. Q4_K_M gives Q6_K to the attention-value and
/// feed-forward-down matrices of one layer in three. Pass the result to
/// [`LlamaPeer::fake_quantize`], which then applies the width fallback (Q6_K -> Q8_0 on
/// 576-wide rows). Tensors that are not a layer's projection get the base type.
pub fn tensor_type(
    model_type: &str,
    tensor: &str,
    n_layers: usize,
    n_gqa: usize,
) -> Result<&'static str, PeerError> {
    let ftype = model_type.to_ascii_uppercase();
    let base = match ftype.as_str() {
        "Q4_0" => "Q4_0",
        "Q4_1" => "Q4_1",
        "Q5_0" => "Q5_0",
        "Q5_1" => "Q5_1",
        "Q8_0" => "Q8_0",
        "IQ4_NL" => "IQ4_NL",
        "IQ4_XS" => "IQ4_XS",
        "Q4_K_S" | "Q4_K_M" => "Q4_K",
        "Q5_K_S" | "Q5_K_M" => "Q5_K",
        "Q6_K" => "Q6_K",
        _ => return Err(PeerError::ModelType(model_type.to_owned())),
    };
    let Some((layer, role)) = layer_and_role(tensor) else {
        return Ok(base);
    };
    // llama.cpp's use_more_bits: the first and last eighth of the layers, and one in
    // three between.
    let more_bits =
        layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
    let first_eighth = layer < n_layers / 8;
    let chosen = match (role, ftype.as_str()) {
        ("v_proj", "IQ4_NL" | "IQ4_XS") if n_gqa >= 4 => "Q5_K",
        ("v_proj", "Q4_K_M" | "Q5_K_M") if more_bits => "Q6_K",
        ("v_proj", "Q4_K_S") if layer < 4 => "Q5_K",
        ("down_proj", "Q4_K_M" | "Q5_K_M") if more_bits => "Q6_K",
        ("down_proj", "IQ4_NL" | "IQ4_XS" | "Q4_K_S") if first_eighth => "Q5_K",
        _ => base,
    };
    Ok(chosen)
}

/// `model.layers.{i}.{self_attn|mlp}.{role}.weight` -> (i, role).
fn layer_and_role(tensor: &str) -> Option<(usize, &str)> {
    let rest = tensor.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let role = rest.strip_suffix(".weight")?.rsplit('.').next()?;
    Some((layer.parse().ok()?, role))
}

fn read_to_end(mut pipe: impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    pipe.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn send(stdin: std::process::ChildStdin, weights: &[f32]) -> std::io::Result<()> {
    let mut writer = std::io::BufWriter::with_capacity(1 << 16, stdin);
    for w in weights {
        writer.write_all(&w.to_le_bytes())?;
    }
    writer.flush()
}

/// The tool's stdout (f32 values) and its stderr line
/// `llama_quant: asked=T used=T row_bytes=N quantize_seconds=S`.
fn parse(bytes: &[u8], report: &str, rows: usize, cols: usize) -> Result<PeerQuantized, PeerError> {
    if bytes.len() != rows * cols * 4 {
        return Err(PeerError::Output(format!(
            "{} bytes on stdout for {rows}×{cols} f32",
            bytes.len()
        )));
    }
    let weights = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let line = report
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("llama_quant: "))
        .ok_or_else(|| PeerError::Output(format!("no report line in {report:?}")))?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .ok_or_else(|| PeerError::Output(format!("no {key} in {line:?}")))
    };
    let number = |key: &str| {
        field(key)?
            .parse::<f64>()
            .map_err(|_| PeerError::Output(format!("{key} is not a number in {line:?}")))
    };
    let row_bytes = number("row_bytes")?;
    Ok(PeerQuantized {
        weights,
        bits_per_weight: 8.0 * row_bytes / cols as f64,
        type_used: field("used")?.to_owned(),
        quantize_seconds: number("quantize_seconds")?,
    })
}

/// A model's block projections decoded from llama.cpp's whole-model type (each tensor
/// in the type llama-quantize would give it, [`tensor_type`]), with their exact sizes.
#[derive(Debug)]
pub struct PeerProjections {
    decoded: std::collections::HashMap<String, PeerQuantized>,
}

impl PeerProjections {
    /// Runs every block projection of `model` (dense weights) through `peer` in the
    /// whole-model type `model_type` (`Q4_0`, `IQ4_NL`, `Q4_K_M`...).
    pub fn quantize(
        peer: &LlamaPeer,
        model: &crate::Model<'_>,
        model_type: &str,
    ) -> crate::Result<PeerProjections> {
        let heads = model.config.num_attention_heads;
        let n_gqa = heads / model.config.num_key_value_heads.unwrap_or(heads).max(1);
        let n_layers = model.layers.len();
        let mut decoded = std::collections::HashMap::new();
        for (name, lin) in model.projections() {
            let failed = |source| crate::EvalError::Peer {
                tensor: name.clone(),
                source,
            };
            let crate::Linear::Dense { w, rows, cols } = lin else {
                return Err(crate::EvalError::Shape(format!(
                    "{name}: llama.cpp's quantizer needs dense input weights"
                )));
            };
            let kind = tensor_type(model_type, &name, n_layers, n_gqa).map_err(failed)?;
            let q = peer.fake_quantize(kind, w, *rows, *cols).map_err(failed)?;
            decoded.insert(name, q);
        }
        Ok(PeerProjections { decoded })
    }

    /// `reference` with its block projections replaced by the decoded ones.
    pub fn model<'a>(&'a self, reference: &'a crate::Model<'a>) -> crate::Result<crate::Model<'a>> {
        reference.map_projections(|name, lin| {
            let q = self
                .decoded
                .get(name)
                .ok_or_else(|| crate::EvalError::MissingTensor(name.to_string()))?;
            let (rows, cols) = lin.shape();
            Ok(crate::Linear::Decoded {
                w: std::borrow::Cow::Borrowed(&q.weights),
                rows,
                cols,
                bits_per_weight: q.bits_per_weight,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_is_a_clear_error() {
        let path = std::env::temp_dir().join("adpq-no-such-dir/llama_quant");
        let err = LlamaPeer::at(&path).unwrap_err();
        assert!(matches!(&err, PeerError::NotBuilt { path: p } if *p == path));
        assert!(err.to_string().contains("scripts/llama-peer.sh"), "{err}");
    }

    #[test]
    fn a_tool_that_cannot_run_is_an_io_error() {
        // A directory is no executable: spawning it fails with an error, no panic.
        let peer = LlamaPeer {
            tool: std::env::temp_dir(),
        };
        let err = peer.fake_quantize("Q4_0", &[0.0; 32], 1, 32).unwrap_err();
        assert!(matches!(err, PeerError::Io { .. }), "{err}");
    }

    #[test]
    fn shape_is_checked_before_spawning() {
        let peer = LlamaPeer {
            tool: PathBuf::from("/nonexistent"),
        };
        let err = peer.fake_quantize("Q4_0", &[0.0; 31], 1, 32).unwrap_err();
        assert!(
            matches!(
                err,
                PeerError::Shape {
                    len: 31,
                    rows: 1,
                    cols: 32
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn model_types_mirror_llama_quantize_on_smollm2_shapes() {
        // SmolLM2-135M: 30 layers, 9 query heads over 3 key/value heads.
        let t = |ftype, name: &str| tensor_type(ftype, name, 30, 3).unwrap();
        let v = |i: usize| format!("model.layers.{i}.self_attn.v_proj.weight");
        let down = |i: usize| format!("model.layers.{i}.mlp.down_proj.weight");
        // use_more_bits(i, 30): i < 3, i >= 26, (i - 3) % 3 == 2.
        let more: Vec<usize> = (0..30).filter(|&i| t("Q4_K_M", &v(i)) == "Q6_K").collect();
        assert_eq!(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
        assert_eq!(t("q4_k_m", &down(5)), "Q6_K");
        assert_eq!(t("Q4_K_M", &down(6)), "Q4_K");
        assert_eq!(
            t("Q4_K_M", "model.layers.0.self_attn.q_proj.weight"),
            "Q4_K"
        );
        assert_eq!(t("Q4_K_S", &v(3)), "Q5_K");
        assert_eq!(t("Q4_K_S", &v(4)), "Q4_K");
        assert_eq!(t("Q4_K_S", &down(2)), "Q5_K");
        assert_eq!(t("Q4_K_S", &down(3)), "Q4_K");
        assert_eq!(t("IQ4_XS", &down(2)), "Q5_K");
        assert_eq!(t("IQ4_NL", &v(0)), "IQ4_NL");
        assert_eq!(tensor_type("IQ4_NL", &v(0), 30, 4).unwrap(), "Q5_K");
        assert_eq!(t("Q4_0", &down(0)), "Q4_0");
        assert_eq!(t("Q4_K_M", "model.norm.weight"), "Q4_K");
        assert!(matches!(
            tensor_type("IQ2_XXS", &v(0), 30, 3),
            Err(PeerError::ModelType(_))
        ));
    }

    #[test]
    fn report_line_gives_bits_and_type() {
        let bytes = [0u8; 2 * 32 * 4];
        let report = "noise\nllama_quant: asked=q4_K used=q5_0 row_bytes=22 quantize_seconds=0.5\n";
        let q = parse(&bytes, report, 2, 32).unwrap();
        assert_eq!(q.bits_per_weight, 5.5);
        assert_eq!(q.type_used, "q5_0");
        assert_eq!(q.quantize_seconds, 0.5);
        assert_eq!(q.weights, vec![0.0; 64]);
        assert!(matches!(
            parse(&bytes, "nothing", 2, 32),
            Err(PeerError::Output(_))
        ));
        assert!(matches!(
            parse(&bytes[1..], report, 2, 32),
            Err(PeerError::Output(_))
        ));
    }
}
