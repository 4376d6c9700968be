//! Per-tensor parameters: which bits and α each quantized tensor gets.
//!
//! A run has base parameters (`--format`, `--bits`, `--alpha`, ...). Rules given with
//! `--tensor-params 'REGEX=bits:6,alpha:0.05'` (repeatable) change the bits and/or α of
//! the tensors whose names match; the first matching rule wins, a tensor no rule matches
//! gets the base. A preset ([`Preset`]) is base defaults plus rules, placed after the
//! user's own rules (so the user's win).
//!
//! Every packed buffer records its own bits and α, and the checkpoint's metadata records
//! the parameters of each tensor that differs from the base (`adpq_io::meta`), so a
//! reader never needs the rules.

use crate::error::{Error, Result};
use adpq_core::{FormatVersion, Grid, ParamFields, Params, SelectionMode};
use clap::{Args, ValueEnum};
use regex::Regex;

/// The flags of `adpq quantize` that choose the parameters (flattened into its
/// arguments, in this order), resolved by [`ParamArgs::resolve`].
#[derive(Args, Debug, Clone, Default)]
pub struct ParamArgs {
    /// Packed format version: v3 (rows rotated, a 4-bit code book, 6-bit group fields, no
    /// outlier split: --alpha 0, power-of-two groups up to 512; preset v3), v2 (AdpQ's
    /// outlier split, asymmetric searched inliers, groups below 256; preset v2-vproj6), or
    /// v1 (the first format: two f16 steps per group; its defaults: --group-size 128
    /// --alpha 0.06, symmetric; no preset) [default: v3].
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Target fraction of outliers per tensor (v1, v2; v3 has none, alpha 0) [default: v3:
    /// 0; v2 (preset v2-vproj6): 0.04; v2 --preset none: 0.05; v1: 0.06].
    #[arg(long)]
    alpha: Option<f64>,
    /// Bits per code (2..=8) [default: 4; preset v3: the rules' bits, and for tensors no
    /// rule names the allocation's, which setting --bits turns off].
    #[arg(long)]
    bits: Option<u8>,
    /// Weights per group along a row (v3: a power of two, 16..=512; v2: 16..=255; v1:
    /// 16..=1024) [default: 64; v1: 128; preset v3: as --bits].
    #[arg(long)]
    group_size: Option<u16>,
    /// v1 only: asymmetric (min-max, zero point) grids instead of symmetric ones (v2's
    /// inliers are always asymmetric).
    #[arg(long)]
    asymmetric: bool,
    /// Other bits, alpha and/or group size for the tensors whose names match REGEX, e.g.
    /// 'v_proj=bits:6,alpha:0.05' or 'down_proj=bits:5,group:128' (repeatable; the first
    /// matching rule wins).
    #[arg(long, value_name = "REGEX=bits:N,alpha:X,group:G")]
    tensor_params: Vec<String>,
    /// A named policy: its defaults and rules (after --tensor-params' rules).
    /// v3: format v3, 6 bits in groups of 128 for v_proj, groups of 128 for k_proj, 5 bits
    /// for down_proj and up_proj, 4 bits in groups of 64 for q_proj, o_proj and
    /// gate_proj; a tensor no rule names gets its bits and group as v3-auto chooses them,
    /// within --bits-budget for those tensors (or --bits and --group-size, when given).
    /// v3-auto: format v3, each tensor's bits (3-6) and group (32, 64, 128) chosen from
    /// its weights for the least squared error within --bits-budget, whatever the tensor
    /// names. v2-vproj6: format v2, 6-bit codes and alpha 0.05 for v_proj, alpha 0.04
    /// elsewhere. none: the format's plain defaults for every tensor [default: v3; with
    /// --format v2: v2-vproj6].
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Presets v3-auto and v3: packed bits per quantized weight to spend, everything
    /// counted (v3-auto: over every quantized tensor; v3: over the tensors no rule names)
    /// [default: 4.8].
    #[arg(long, value_name = "B")]
    bits_budget: Option<f64>,
    /// Select outliers like the Python reference (Brent search, at most N iterations)
    /// instead of exactly round(alpha*N).
    #[arg(long, value_name = "N")]
    reference_iters: Option<u32>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
/// `--format` (the variants carry no doc comment: clap would print them in `--help`).
#[allow(missing_docs)]
pub enum FormatArg {
    V1,
    V2,
    V3,
}

impl FormatArg {
    /// The format version.
    fn version(self) -> FormatVersion {
        match self {
            FormatArg::V1 => FormatVersion::V1,
            FormatArg::V2 => FormatVersion::V2,
            FormatArg::V3 => FormatVersion::V3,
        }
    }
}

impl ParamArgs {
    /// The run's per-tensor parameters: the base ([`base_params`]) changed by the
    /// user's `--tensor-params` rules, then the preset's; a usage error when the flags do
    /// not go together or a rule is malformed.
    pub fn resolve(&self) -> Result<TensorParams> {
        let mut tp = TensorParams::new(base_params(self)?, &rules(self))?;
        let preset = effective_preset(self);
        let fixed_base = self.bits.is_some() || self.group_size.is_some();
        // Preset v3 with --bits or --group-size: every tensor no rule names takes that
        // base, nothing is allocated.
        let allocates = match preset {
            Some(Preset::V3Auto) => true,
            Some(Preset::V3) => !fixed_base || self.bits_budget.is_some(),
            _ => false,
        };
        if allocates {
            if fixed_base {
                return Err(Error::Usage(
                    "--bits-budget (and --preset v3-auto) chooses the bits and group size of \
                     tensors no rule names: set a budget with --bits-budget, or fix tensors \
                     with --tensor-params"
                        .into(),
                ));
            }
            let budget = self.bits_budget.unwrap_or(DEFAULT_BITS_BUDGET);
            if !(budget.is_finite() && budget > 0.0) {
                return Err(Error::Usage(format!(
                    "--bits-budget {budget}: expected a positive number of bits per weight"
                )));
            }
            tp.budget = Some(budget);
            // Preset v3's rules name the Llama projections; the budget is the others'. Its
            // default budget is a target: a tensor too small to fit it at any setting
            // keeps the base instead of failing the run.
            tp.ruled_outside_budget = preset == Some(Preset::V3);
            tp.soft_budget = preset == Some(Preset::V3) && self.bits_budget.is_none();
        } else if self.bits_budget.is_some() {
            return Err(Error::Usage(
                "--bits-budget needs --preset v3-auto or v3 (the other presets fix each \
                 tensor's bits)"
                    .into(),
            ));
        }
        Ok(tp)
    }

    /// Whether the run quantizes a tied token embedding (preset `v3`, the default: see
    /// the `filter` module).
    pub fn takes_tied_embedding(&self) -> bool {
        effective_preset(self) == Some(Preset::V3)
    }
}

/// The run's base parameters from `--format`, `--preset` and the flags the user set (a
/// flag left out takes the format's or the preset's default); a usage error when they do
/// not go together.
fn base_params(a: &ParamArgs) -> Result<Params> {
    let version = match (a.format, effective_preset(a)) {
        (Some(f), Some(p)) if f.version() != p.version() => {
            return Err(Error::Usage(format!(
                "--format {} cannot be combined with --preset {}",
                f.to_possible_value()
                    .map_or("?".into(), |v| v.get_name().to_string()),
                p.to_possible_value()
                    .map_or("?".into(), |v| v.get_name().to_string())
            )));
        }
        (_, Some(p)) => p.version(),
        (Some(f), None) => f.version(),
        (None, None) => FormatVersion::V3,
    };
    let base = match (effective_preset(a), version) {
        (Some(p), _) => p.base(),
        (None, FormatVersion::V1) => Params::V1,
        (None, FormatVersion::V2) => Params::V2,
        (None, FormatVersion::V3) => Params::V3,
    };
    let grid = match version {
        FormatVersion::V2 | FormatVersion::V3 => Grid::Asymmetric,
        FormatVersion::V1 if a.asymmetric => Grid::Asymmetric,
        FormatVersion::V1 => base.grid(),
    };
    let mut fields = ParamFields {
        bits: a.bits.unwrap_or(base.bits()),
        group_size: a.group_size.unwrap_or(base.group_size()),
        alpha: a.alpha.unwrap_or(base.alpha()),
        grid,
        version,
        ..base.fields()
    };
    if let Some(n) = a.reference_iters {
        if version == FormatVersion::V3 {
            return Err(Error::Usage(
                "--reference-iters selects outliers as the Python reference does, and \
                 format v3 (the default format) has no outliers: use --format v2 or v1"
                    .into(),
            ));
        }
        fields.selection = SelectionMode::Reference { n_iters: n };
    }
    fields.validate().map_err(|e| {
        let format = match (version, a.format) {
            (FormatVersion::V1, _) => "",
            (FormatVersion::V2, _) => "--format v2: ",
            (FormatVersion::V3, Some(_)) => "--format v3: ",
            (FormatVersion::V3, None) => {
                "format v3, the default (--format v2 or v1 for AdpQ's outlier split): "
            }
        };
        Error::Usage(format!("{format}{e}"))
    })
}

/// The preset in force: `--preset`, or the measured best of the format (`v3`, the
/// default, docs/FORMAT-v3-experiments.md; `v2-vproj6` with `--format v2`,
/// docs/FORMAT-v2.md), none for `--format v1`.
fn effective_preset(a: &ParamArgs) -> Option<Preset> {
    match (a.preset, a.format) {
        (Some(Preset::None), None | Some(FormatArg::V1 | FormatArg::V3)) => None,
        (Some(p), _) => Some(p),
        (None, Some(FormatArg::V1)) => None,
        (None, Some(FormatArg::V2)) => Some(Preset::V2Vproj6),
        (None, _) => Some(Preset::V3),
    }
}

/// The per-tensor rules: the user's `--tensor-params`, then the preset's.
fn rules(a: &ParamArgs) -> Vec<String> {
    let preset = effective_preset(a).map_or(&[][..], Preset::rules);
    a.tensor_params
        .iter()
        .cloned()
        .chain(preset.iter().map(|s| s.to_string()))
        .collect()
}

/// A named set of defaults and rules (`--preset`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Format v2, 6-bit codes and α 0.05 for the attention value projections (`v_proj`),
    /// 4 bits and α 0.04 for every other tensor: the measured winner of
    /// docs/FORMAT-v2.md (4.798 bits/weight on SmolLM2).
    #[value(name = "v2-vproj6")]
    V2Vproj6,
    /// Format v3, the default: 6-bit codes in groups of 128 for `v_proj`, groups of 128
    /// for `k_proj`, 5 bits for `down_proj` and `up_proj`, 4 (the code book) in groups of
    /// 64 for `q_proj`, `o_proj` and `gate_proj` (`Params::v3_for`; 4.798 bits/weight on
    /// SmolLM2's projections, docs/FORMAT-v3-experiments.md), 7 bits for a tied token
    /// embedding (`embed_tokens`, quantized only when tied). A tensor no rule names (another
    /// architecture's) gets its bits and group as preset `v3-auto` chooses them, within
    /// `--bits-budget` for those tensors.
    #[value(name = "v3")]
    V3,
    /// Format v3, each tensor's bits (3 to 6) and group size (32, 64 or 128) chosen from
    /// its weights alone for the least summed squared error within a bits/weight budget
    /// (`--bits-budget`, default [`DEFAULT_BITS_BUDGET`]): no names, so any architecture.
    #[value(name = "v3-auto")]
    V3Auto,
    /// No preset: the format's own defaults for every tensor (v3: the 4-bit code book in
    /// groups of 64; `--format v2`: 4 bits, g 64, α 0.05) and only the user's rules.
    #[value(name = "none")]
    None,
}

impl Preset {
    /// The preset's format version.
    pub fn version(self) -> FormatVersion {
        match self {
            Preset::V2Vproj6 | Preset::None => FormatVersion::V2,
            Preset::V3 | Preset::V3Auto => FormatVersion::V3,
        }
    }

    /// The preset's base parameters (before the user's flags).
    pub fn base(self) -> Params {
        match self {
            Preset::V2Vproj6 => Params::V2_PRESET,
            Preset::V3 | Preset::V3Auto => Params::V3,
            Preset::None => Params::V2,
        }
    }

    /// The preset's rules, in `--tensor-params` syntax.
    pub fn rules(self) -> &'static [&'static str] {
        match self {
            Preset::V2Vproj6 => &[r"v_proj=bits:6,alpha:0.05"],
            // Whole name components, as `Params::v3_for` matches them: Phi-3's `qkv_proj`
            // and `gate_up_proj` are other matrices than `v_proj` and `up_proj`.
            Preset::V3 => &[
                r"(^|\.)v_proj(\.|$)=bits:6,group:128",
                r"(^|\.)k_proj(\.|$)=group:128",
                r"(^|\.)(down_proj|up_proj)(\.|$)=bits:5",
                // The tied token embedding (the filter takes it only when tied): the
                // output projection, read whole for every token.
                r"(^|\.)embed_tokens(\.|$)=bits:7",
                // Names them, so they take the base (alpha 0 is v3's own) and are not
                // allocated.
                r"(^|\.)(q_proj|o_proj|gate_proj)(\.|$)=alpha:0",
            ],
            Preset::V3Auto | Preset::None => &[],
        }
    }
}

/// The default of `--bits-budget`: preset `v3`'s and `v2-vproj6`'s bits/weight on SmolLM2
/// (4.798), rounded.
pub const DEFAULT_BITS_BUDGET: f64 = 4.8;

/// The settings preset `v3-auto` chooses among for each tensor: `base` with 3 to 6 bits
/// in groups of 32, 64 or 128.
pub fn auto_candidates(base: &Params) -> Vec<Params> {
    let mut out = Vec::new();
    for bits in 3..=6u8 {
        for group_size in [32u16, 64, 128] {
            let fields = ParamFields {
                bits,
                group_size,
                ..base.fields()
            };
            // Always valid for v3 (the only format the preset uses); skipped otherwise.
            if let Ok(p) = fields.validate() {
                out.push(p);
            }
        }
    }
    out
}

/// One `--tensor-params` rule.
#[derive(Debug, Clone)]
struct Rule {
    pattern: Regex,
    bits: Option<u8>,
    alpha: Option<f64>,
    group_size: Option<u16>,
}

impl Rule {
    /// Parses `REGEX=key:value[,key:value]` with keys `bits`, `alpha` and `group`.
    fn parse(spec: &str) -> std::result::Result<Rule, String> {
        let (re, settings) = spec
            .rsplit_once('=')
            .ok_or("expected REGEX=bits:N,alpha:X")?;
        let pattern = Regex::new(re).map_err(|e| format!("invalid regex: {e}"))?;
        let (mut bits, mut alpha, mut group_size) = (None, None, None);
        for kv in settings.split(',') {
            let (key, value) = kv
                .split_once(':')
                .ok_or_else(|| format!("`{kv}`: expected key:value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("`{kv}`: {e}");
            match key.trim() {
                "bits" => bits = Some(value.trim().parse().map_err(|e| bad(&e))?),
                "alpha" => alpha = Some(value.trim().parse().map_err(|e| bad(&e))?),
                "group" => group_size = Some(value.trim().parse().map_err(|e| bad(&e))?),
                other => {
                    return Err(format!(
                        "unknown key `{other}` (expected bits, alpha or group)"
                    ))
                }
            }
        }
        Ok(Rule {
            pattern,
            bits,
            alpha,
            group_size,
        })
    }

    /// `base` with this rule's settings: invalid parameters are the rule's error.
    fn apply(&self, base: &Params) -> adpq_core::Result<Params> {
        ParamFields {
            bits: self.bits.unwrap_or(base.bits()),
            alpha: self.alpha.unwrap_or(base.alpha()),
            group_size: self.group_size.unwrap_or(base.group_size()),
            ..base.fields()
        }
        .validate()
    }
}

/// The parameters of every tensor of a run: the base, the rules and, after a bit
/// allocation (preset `v3-auto`), each allocated tensor's own.
#[derive(Debug, Clone, Default)]
pub struct TensorParams {
    base: Params,
    /// Each rule's pattern and the parameters it gives (the base changed by it).
    rules: Vec<(Regex, Params)>,
    specs: Vec<String>,
    /// Bits per weight to allocate (presets `v3-auto` and `v3`), before the allocation.
    budget: Option<f64>,
    /// Whether tensors a rule names stay out of the allocation and its budget (preset
    /// `v3`), rather than counting against it (`v3-auto`).
    ruled_outside_budget: bool,
    /// Whether a tensor that cannot fit the budget at any setting keeps the base (preset
    /// `v3` without `--bits-budget`) instead of making the budget a usage error.
    soft_budget: bool,
    /// Allocated parameters by tensor name, sorted by name (empty without an allocation).
    assigned: Vec<(String, Params)>,
}

impl TensorParams {
    /// The same parameters for every tensor.
    pub fn uniform(base: Params) -> TensorParams {
        TensorParams {
            base,
            rules: Vec::new(),
            specs: Vec::new(),
            budget: None,
            ruled_outside_budget: false,
            soft_budget: false,
            assigned: Vec::new(),
        }
    }

    /// `base` changed by `specs` (in `--tensor-params` syntax, first match wins); a usage
    /// error for a malformed rule or one that makes invalid parameters.
    pub fn new(base: Params, specs: &[impl AsRef<str>]) -> Result<TensorParams> {
        let mut tp = TensorParams::uniform(base);
        for spec in specs {
            let spec = spec.as_ref();
            let usage = |e: String| Error::Usage(format!("--tensor-params `{spec}`: {e}"));
            let rule = Rule::parse(spec).map_err(usage)?;
            let params = rule.apply(&base).map_err(|e| usage(e.to_string()))?;
            tp.rules.push((rule.pattern, params));
            tp.specs.push(spec.to_string());
        }
        Ok(tp)
    }

    /// The base parameters (tensors no rule matches).
    pub fn base(&self) -> &Params {
        &self.base
    }

    /// The base and every rule's and allocated tensor's parameters, for checks.
    pub fn all(&self) -> impl Iterator<Item = Params> + '_ {
        std::iter::once(self.base)
            .chain(self.rules.iter().map(|(_, p)| *p))
            .chain(self.assigned.iter().map(|(_, p)| *p))
    }

    /// The bits per weight still to allocate (presets `v3-auto` and `v3`), `None` once
    /// allocated or without those presets.
    pub fn budget(&self) -> Option<f64> {
        self.budget
    }

    /// Whether a tensor a rule names stays out of the allocation (preset `v3`: the
    /// budget is that of the tensors no rule names) instead of counting against it.
    pub fn ruled_outside_budget(&self) -> bool {
        self.ruled_outside_budget
    }

    /// Whether a tensor that cannot fit the budget at any setting keeps the base (the
    /// default preset's own budget) rather than the budget being a usage error (one the
    /// user set).
    pub fn soft_budget(&self) -> bool {
        self.soft_budget
    }

    /// These parameters with each named tensor's allocated parameters (a rule that
    /// matches a tensor still wins); the budget is then spent.
    pub fn with_assigned(&self, mut assigned: Vec<(String, Params)>) -> TensorParams {
        assigned.sort_by(|a, b| a.0.cmp(&b.0));
        TensorParams {
            budget: None,
            assigned,
            ..self.clone()
        }
    }

    /// The parameters of the first rule matching `name`, if any.
    pub fn by_rule(&self, name: &str) -> Option<Params> {
        self.rules
            .iter()
            .find(|(pattern, _)| pattern.is_match(name))
            .map(|(_, p)| *p)
    }

    /// The rules as given, in order.
    pub fn rules(&self) -> &[String] {
        &self.specs
    }

    /// The parameters of tensor `name`: those of the first rule whose pattern matches,
    /// else its allocated ones, else the base.
    pub fn of(&self, name: &str) -> Params {
        self.by_rule(name).unwrap_or_else(|| {
            self.assigned
                .binary_search_by(|(n, _)| n.as_str().cmp(name))
                .map_or(self.base, |i| self.assigned[i].1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CLI's default preset (v3) gives every Llama projection the library's default
    /// parameters, and allocates the rest within the default budget.
    #[test]
    fn default_preset_is_the_library_default() {
        let tp = ParamArgs::default().resolve().unwrap();
        for name in [
            "model.layers.0.self_attn.v_proj.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.k_proj.weight",
            "model.layers.0.self_attn.o_proj.weight",
            "model.layers.11.mlp.down_proj.weight",
            "model.layers.11.mlp.up_proj.weight",
            "model.layers.11.mlp.gate_proj.weight",
            "model.embed_tokens.weight",
        ] {
            assert_eq!(tp.by_rule(name), Some(Params::default_for(name)), "{name}");
        }
        assert_eq!(
            tp.by_rule("encoder.layer.0.attention.self.query.weight"),
            None
        );
        assert_eq!(*tp.base(), Params::DEFAULT);
        assert_eq!(tp.budget(), Some(DEFAULT_BITS_BUDGET));
        assert!(tp.ruled_outside_budget() && tp.soft_budget());
        // --format v2 alone is v2's measured preset, as the default was before v3.
        let v2 = ParamArgs {
            format: Some(FormatArg::V2),
            ..ParamArgs::default()
        }
        .resolve()
        .unwrap();
        for name in [
            "model.layers.0.self_attn.v_proj.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "lm_head.weight",
        ] {
            assert_eq!(v2.of(name), Params::v2_for(name), "{name}");
        }
        assert_eq!(v2.budget(), None);
        // --preset none alone: the default format's plain parameters, no allocation.
        let none = ParamArgs {
            preset: Some(Preset::None),
            ..ParamArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(*none.base(), Params::V3);
        assert!(none.rules().is_empty());
        assert_eq!(none.budget(), None);
    }

    /// Preset v3 with --bits or --group-size: those set the base of the tensors no rule
    /// names, and nothing is allocated; with --bits-budget as well, a usage error.
    #[test]
    fn v3_preset_with_a_fixed_base_allocates_nothing() {
        let tp = ParamArgs {
            bits: Some(5),
            ..ParamArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(tp.budget(), None);
        assert_eq!(
            tp.of("encoder.layer.0.attention.self.query.weight").bits(),
            5
        );
        assert_eq!(tp.of("model.layers.0.self_attn.v_proj.weight").bits(), 6);
        let budget = ParamArgs {
            bits_budget: Some(4.5),
            ..ParamArgs::default()
        };
        assert_eq!(effective_preset(&budget), Some(Preset::V3));
        let budget = budget.resolve().unwrap();
        assert_eq!(budget.budget(), Some(4.5));
        assert!(budget.ruled_outside_budget());
        assert!(
            !budget.soft_budget(),
            "a budget the user set is kept or refused"
        );
        let both = ParamArgs {
            group_size: Some(128),
            bits_budget: Some(4.5),
            preset: Some(Preset::V3),
            ..ParamArgs::default()
        };
        assert!(matches!(both.resolve(), Err(Error::Usage(_))));
    }

    /// Preset v3 gives every tensor the library's v3 parameters, and `--format v3` picks
    /// it; `--format v3 --preset none` is plain v3, and a v2 preset with v3 is refused.
    #[test]
    fn v3_preset_is_the_library_v3_rule() {
        let preset = Preset::V3;
        let tp = TensorParams::new(preset.base(), preset.rules()).unwrap();
        for name in [
            "model.layers.0.self_attn.v_proj.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.k_proj.weight",
            "model.layers.0.self_attn.o_proj.weight",
            "model.layers.11.mlp.down_proj.weight",
            "model.layers.11.mlp.up_proj.weight",
            "model.layers.11.mlp.gate_proj.weight",
        ] {
            assert_eq!(tp.of(name), Params::v3_for(name), "{name}");
        }
        let args = |format, preset| ParamArgs {
            format,
            preset,
            ..ParamArgs::default()
        };
        assert_eq!(
            effective_preset(&args(Some(FormatArg::V3), None)),
            Some(Preset::V3)
        );
        assert_eq!(
            base_params(&args(Some(FormatArg::V3), None)).unwrap(),
            Params::V3
        );
        let plain = base_params(&args(Some(FormatArg::V3), Some(Preset::None))).unwrap();
        assert_eq!(plain, Params::V3);
        assert!(rules(&args(Some(FormatArg::V3), Some(Preset::None))).is_empty());
        assert!(base_params(&args(Some(FormatArg::V3), Some(Preset::V2Vproj6))).is_err());
        assert!(base_params(&args(Some(FormatArg::V2), Some(Preset::V3))).is_err());
        assert_eq!(
            base_params(&args(None, Some(Preset::V3))).unwrap(),
            Params::V3
        );
    }

    /// Preset v3-auto: format v3's plain base, no rules of its own, a budget to allocate
    /// (4.8 unless `--bits-budget`) over every tensor, strictly; allocated parameters come
    /// after the user's rules and before the base. `--bits-budget` alone is the default
    /// preset's (v3) budget, strict too; with --format v1 or a v2 preset, a usage error.
    #[test]
    fn v3_auto_preset_carries_a_budget() {
        let args = |format, preset, budget| ParamArgs {
            format,
            preset,
            bits_budget: budget,
            ..ParamArgs::default()
        };
        let tp = args(None, Some(Preset::V3Auto), None).resolve().unwrap();
        assert_eq!(*tp.base(), Params::V3);
        assert!(tp.rules().is_empty());
        assert_eq!(tp.budget(), Some(DEFAULT_BITS_BUDGET));
        assert!(!tp.ruled_outside_budget() && !tp.soft_budget());
        for format in [None, Some(FormatArg::V3)] {
            let a = args(format, None, Some(4.5));
            assert_eq!(effective_preset(&a), Some(Preset::V3), "{a:?}");
            let tp = a.resolve().unwrap();
            assert_eq!(tp.budget(), Some(4.5));
            assert_eq!(*tp.base(), Params::V3);
            assert!(tp.ruled_outside_budget() && !tp.soft_budget());
        }
        // A budget only means something to the allocating presets.
        for bad in [
            args(None, Some(Preset::V2Vproj6), Some(4.8)),
            args(Some(FormatArg::V2), None, Some(4.8)),
            args(Some(FormatArg::V1), None, Some(4.8)),
            args(None, Some(Preset::None), Some(4.8)),
            args(None, Some(Preset::V3Auto), Some(0.0)),
            args(None, Some(Preset::V3Auto), Some(f64::NAN)),
            ParamArgs {
                bits: Some(5),
                ..args(None, Some(Preset::V3Auto), None)
            },
        ] {
            assert!(matches!(bad.resolve(), Err(Error::Usage(_))), "{bad:?}");
        }

        let user = ParamArgs {
            tensor_params: vec!["fixed=bits:6".into()],
            ..args(None, Some(Preset::V3Auto), None)
        };
        let tp = user.resolve().unwrap();
        let five = Params::V3.with_bits(5).unwrap();
        let tp = tp.with_assigned(vec![
            ("b.fixed".into(), Params::V3.with_bits(3).unwrap()),
            ("a".into(), five),
        ]);
        assert_eq!(tp.budget(), None, "spent");
        assert_eq!(tp.of("a"), five);
        assert_eq!(tp.of("b.fixed").bits(), 6, "the user's rule wins");
        assert_eq!(tp.by_rule("a"), None);
        assert_eq!(tp.of("c"), Params::V3);
        assert!(tp.all().any(|p| p == five));
    }

    /// The candidates: 3 to 6 bits in groups of 32, 64 and 128, all valid v3 parameters.
    #[test]
    fn auto_candidates_span_bits_and_groups() {
        let c = auto_candidates(&Params::V3);
        assert_eq!(c.len(), 12);
        assert!(c
            .iter()
            .all(|p| p.version() == FormatVersion::V3 && p.alpha() == 0.0));
        assert_eq!(c.iter().map(|p| p.bits()).min(), Some(3));
        assert_eq!(c.iter().map(|p| p.bits()).max(), Some(6));
        assert!(c.iter().any(|p| p.group_size() == 32));
        assert!(c.iter().any(|p| p.group_size() == 128));
    }

    #[test]
    fn first_matching_rule_wins() {
        let tp = TensorParams::new(
            Params::V2,
            &["v_proj=bits:6,alpha:0.05", "proj=alpha:0.02", "v_=bits:8"],
        )
        .unwrap();
        let v = tp.of("model.layers.0.self_attn.v_proj.weight");
        assert_eq!((v.bits(), v.alpha()), (6, 0.05));
        let q = tp.of("model.layers.0.self_attn.q_proj.weight");
        assert_eq!((q.bits(), q.alpha()), (4, 0.02));
        assert_eq!(tp.of("norm.weight"), Params::V2);
        assert_eq!(q.group_size(), 64);
        assert_eq!(q.version(), FormatVersion::V2);
        let g = TensorParams::new(Params::V3, &["down_proj=bits:5,group:128"]).unwrap();
        let d = g.of("model.layers.3.mlp.down_proj.weight");
        assert_eq!((d.bits(), d.group_size()), (5, 128));
    }

    #[test]
    fn the_preset_is_the_measured_policy() {
        let p = Preset::V2Vproj6;
        let tp = TensorParams::new(p.base(), p.rules()).unwrap();
        let v = tp.of("model.layers.3.self_attn.v_proj.weight");
        assert_eq!((v.bits(), v.alpha(), v.group_size()), (6, 0.05, 64));
        let down = tp.of("model.layers.3.mlp.down_proj.weight");
        assert_eq!(
            (down.bits(), down.alpha(), down.group_size()),
            (4, 0.04, 64)
        );
        assert_eq!(v.version(), FormatVersion::V2);
    }

    #[test]
    fn malformed_rules_are_usage_errors() {
        for (spec, want) in [
            ("v_proj", "expected REGEX="),
            ("v_proj=bits", "expected key:value"),
            ("v_proj=bits:x", "`bits:x`"),
            ("v_proj=rows:64", "unknown key `rows`"),
            ("v_proj=group:300", "group size"),
            ("(=bits:6", "invalid regex"),
            ("v_proj=bits:9", "bits"),
            ("v_proj=alpha:0.7", "alpha"),
        ] {
            let e = TensorParams::new(Params::V2, &[spec]).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{spec}");
            let msg = e.to_string();
            assert!(msg.contains(spec) && msg.contains(want), "{spec}: {msg}");
        }
    }
}
