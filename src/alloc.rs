//! Bit allocation under a budget: which of its candidate settings each tensor gets.
//!
//! Each tensor offers candidates, each with a cost (packed bits) and an estimated error.
//! [`allocate`] minimizes the summed error with the summed cost within a budget, the
//! classic Lagrangian greedy of rate allocation: every tensor starts at its cheapest
//! candidate; the upgrades left on each tensor's lower convex hull (cost against error)
//! are taken in one global order, best error reduction per bit first, as long as they
//! fit. Taking the longest prefix of one fixed order that fits keeps the result
//! deterministic and monotone: a larger budget never gives a tensor a cheaper candidate.
//!
//! The estimates come from the pipeline (`pipeline::allocate`): each candidate encoded
//! on a sample of the tensor's rows by the real encoder.

/// One setting a tensor may get: what it costs and what it is expected to lose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Packed size in bits, everything counted.
    pub cost_bits: u64,
    /// Estimated error (any non-negative scale, the same for every tensor).
    pub error: f64,
}

/// One upgrade step on a tensor's hull: from candidate `from` to `to`.
#[derive(Debug, Clone, Copy)]
struct Step {
    tensor: usize,
    to: usize,
    extra_bits: u64,
    /// Error removed per extra bit.
    gain_per_bit: f64,
}

/// The indices, in `candidates`, of a tensor's lower convex hull of (cost, error), cheapest
/// first: each point costs more and loses strictly less than the one before, at a
/// decreasing gain per bit. A candidate not on it is never the best use of its bits.
fn hull(candidates: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].error.is_finite())
        .collect();
    // Cheapest first; at equal cost the lower error; then the first listed.
    order.sort_by(|&a, &b| {
        let (x, y) = (&candidates[a], &candidates[b]);
        x.cost_bits
            .cmp(&y.cost_bits)
            .then(x.error.total_cmp(&y.error))
            .then(a.cmp(&b))
    });
    let mut hull: Vec<usize> = Vec::new();
    for i in order {
        let c = candidates[i];
        // Only points that lose less than every cheaper one.
        if let Some(&last) = hull.last() {
            if c.error >= candidates[last].error || c.cost_bits == candidates[last].cost_bits {
                continue;
            }
        }
        // Drop points above the segment from their predecessor to this one.
        while hull.len() >= 2 {
            let (a, b) = (
                candidates[hull[hull.len() - 2]],
                candidates[hull[hull.len() - 1]],
            );
            let gain = |p: Candidate, q: Candidate| {
                (p.error - q.error) / (q.cost_bits - p.cost_bits) as f64
            };
            if gain(a, b) <= gain(b, c) {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(i);
    }
    hull
}

/// Chooses one candidate per tensor (the index in its list) for the least summed error
/// whose summed cost is at most `budget_bits`; `None` when even the cheapest candidates
/// exceed it, or a tensor has no candidate with a finite error.
pub fn allocate(tensors: &[Vec<Candidate>], budget_bits: u64) -> Option<Vec<usize>> {
    let hulls: Vec<Vec<usize>> = tensors.iter().map(|c| hull(c)).collect();
    let mut choice = Vec::with_capacity(tensors.len());
    let mut spent = 0u64;
    for (c, h) in tensors.iter().zip(&hulls) {
        let first = *h.first()?;
        spent = spent.checked_add(c[first].cost_bits)?;
        choice.push(first);
    }
    if spent > budget_bits {
        return None;
    }
    let mut steps = Vec::new();
    for (t, (c, h)) in tensors.iter().zip(&hulls).enumerate() {
        for pair in h.windows(2) {
            let (from, to) = (c[pair[0]], c[pair[1]]);
            let extra_bits = to.cost_bits - from.cost_bits;
            steps.push(Step {
                tensor: t,
                to: pair[1],
                extra_bits,
                gain_per_bit: (from.error - to.error) / extra_bits as f64,
            });
        }
    }
    // Best gain per bit first; ties in tensor order. A hull's gains decrease along it,
    // so each tensor's steps keep their order (the sort is stable).
    steps.sort_by(|a, b| {
        b.gain_per_bit
            .total_cmp(&a.gain_per_bit)
            .then(a.tensor.cmp(&b.tensor))
    });
    // The longest prefix that fits. Skipping a step that does not fit to take smaller
    // ones after it would spend a little more of the budget, but then a larger budget
    // (which takes that step) could lose them: no longer monotone.
    for s in steps {
        match spent.checked_add(s.extra_bits) {
            Some(total) if total <= budget_bits => {
                spent = total;
                choice[s.tensor] = s.to;
            }
            _ => break,
        }
    }
    Some(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(cost_bits: u64, error: f64) -> Candidate {
        Candidate { cost_bits, error }
    }

    fn cost(tensors: &[Vec<Candidate>], choice: &[usize]) -> u64 {
        tensors
            .iter()
            .zip(choice)
            .map(|(t, &i)| t[i].cost_bits)
            .sum()
    }

    fn error(tensors: &[Vec<Candidate>], choice: &[usize]) -> f64 {
        tensors.iter().zip(choice).map(|(t, &i)| t[i].error).sum()
    }

    /// A small deterministic pseudo-random instance: `n` tensors with error falling by
    /// about 4× per bit from a random level, at random sizes.
    fn instance(n: usize, seed: u64) -> Vec<Vec<Candidate>> {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        (0..n)
            .map(|_| {
                let weights = 1000 + (next() * 9000.0) as u64;
                let level = 0.1 + next();
                (3..=6u64)
                    .flat_map(|bits| {
                        [64u64, 128].map(|g| {
                            let cost = weights * bits + weights * 12 / g;
                            let err = level * 4f64.powi(-(bits as i32)) * (1.0 + g as f64 / 512.0);
                            c(cost, err * (0.9 + 0.2 * next()))
                        })
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn hull_keeps_only_useful_points() {
        // (20, 5) is dominated by (10, 5); (25, 3.9) lies above the segment from (10, 5)
        // to (30, 1): it is never the best use of its bits.
        let cands = [c(10, 5.0), c(20, 5.0), c(30, 1.0), c(25, 3.9), c(40, 0.9)];
        assert_eq!(hull(&cands), vec![0, 2, 4]);
        assert_eq!(hull(&[c(5, f64::NAN)]), Vec::<usize>::new());
    }

    #[test]
    fn budget_respected_and_spent() {
        let tensors = instance(40, 7);
        let min: u64 = tensors
            .iter()
            .map(|t| t.iter().map(|c| c.cost_bits).min().unwrap())
            .sum();
        let max: u64 = tensors
            .iter()
            .map(|t| t.iter().map(|c| c.cost_bits).max().unwrap())
            .sum();
        assert_eq!(allocate(&tensors, min - 1), None);
        for budget in [min, (min + max) / 2, max, max * 2] {
            let choice = allocate(&tensors, budget).unwrap();
            let spent = cost(&tensors, &choice);
            assert!(spent <= budget, "{spent} > {budget}");
            // Whatever is left cannot pay for the cheapest upgrade still open.
            let largest_step = tensors
                .iter()
                .map(|t| {
                    t.iter().map(|c| c.cost_bits).max().unwrap()
                        - t.iter().map(|c| c.cost_bits).min().unwrap()
                })
                .max()
                .unwrap();
            assert!(budget.min(max) - spent <= largest_step);
        }
    }

    #[test]
    fn deterministic() {
        let tensors = instance(60, 3);
        let budget = tensors.iter().map(|t| t[3].cost_bits).sum();
        let first = allocate(&tensors, budget);
        assert!(first.is_some());
        for _ in 0..3 {
            assert_eq!(allocate(&tensors, budget), first);
        }
    }

    /// A larger budget never gives a tensor a cheaper candidate, nor more total error.
    #[test]
    fn monotone_in_the_budget() {
        let tensors = instance(50, 11);
        let min: u64 = tensors
            .iter()
            .map(|t| t.iter().map(|c| c.cost_bits).min().unwrap())
            .sum();
        let mut previous: Option<Vec<usize>> = None;
        for k in 0..60 {
            let choice = allocate(&tensors, min + k * 2000).unwrap();
            if let Some(p) = &previous {
                for (t, (&a, &b)) in p.iter().zip(&choice).enumerate() {
                    assert!(
                        tensors[t][b].cost_bits >= tensors[t][a].cost_bits,
                        "tensor {t}"
                    );
                }
                assert!(error(&tensors, &choice) <= error(&tensors, p));
            }
            previous = Some(choice);
        }
    }

    /// With one tensor far more sensitive than the rest, the bits go there first.
    #[test]
    fn bits_go_where_the_error_is() {
        let flat = |level: f64| -> Vec<Candidate> {
            (4..=6)
                .map(|b| c(1000 * b, level * 4f64.powi(-(b as i32))))
                .collect()
        };
        let tensors = vec![flat(1.0), flat(100.0), flat(1.0)];
        let choice = allocate(&tensors, 4000 + 6000 + 4000).unwrap();
        assert_eq!(choice, vec![0, 2, 0]);
    }
}
