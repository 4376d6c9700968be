//! Helpers shared by the forward-pass test files.

use adpq_core::kernels::AnyKernels;
use adpq_eval::decode::Decoder;
use adpq_eval::Model;

/// The bits of every logit a decoder gives stepping through `tokens`, on a pool of
/// `threads` threads: each step on its own (`Decoder::step`), or with `team`, all on one
/// team's helpers (`Decoder::with_team`).
pub fn decoder_logit_bits(
    model: &Model<'_>,
    kernels: AnyKernels,
    tokens: &[u32],
    threads: usize,
    team: bool,
) -> Vec<u32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool");
    pool.install(|| {
        let mut dec = Decoder::new(model, kernels, tokens.len()).expect("a decoder");
        let bits = |l: &[f32]| l.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        if team {
            dec.with_team(|steps| {
                tokens
                    .iter()
                    .flat_map(|&t| bits(steps.step(t).expect("a step")))
                    .collect()
            })
        } else {
            tokens
                .iter()
                .flat_map(|&t| bits(dec.step(t).expect("a step")))
                .collect()
        }
    })
}
