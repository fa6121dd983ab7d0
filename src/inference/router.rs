//! A model's versions and their traffic weights (canary splits, sticky keys), changeable at
//! run time. Generic over the version so the fallback layer can use it without naming the
//! version client ([`crate::inference::model::Router`] is the one the registry builds).

use std::sync::{Arc, RwLock};

use rand::Rng;

/// Weights that do not fit the versions: not one per version, or all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("one weight per version, not all zero")]
pub struct WeightsError;

/// Versions and their traffic weights.
pub struct Router<V> {
    /// Versions in declaration order.
    pub versions: Vec<Arc<V>>,
    /// Traffic weights (changeable at run time).
    weights: RwLock<Vec<u32>>,
}

impl<V> Router<V> {
    /// A router over `versions` with one weight each.
    pub fn new(versions: Vec<Arc<V>>, weights: Vec<u32>) -> Self {
        Router {
            versions,
            weights: RwLock::new(weights),
        }
    }

    /// Current weights.
    pub fn weights(&self) -> Vec<u32> {
        self.weights
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the weights (same length, not all zero).
    pub fn set_weights(&self, weights: Vec<u32>) -> Result<(), WeightsError> {
        if weights.len() != self.versions.len() || weights.iter().all(|w| *w == 0) {
            return Err(WeightsError);
        }
        *self.weights.write().unwrap_or_else(|e| e.into_inner()) = weights;
        Ok(())
    }

    /// The version for a row: by `key_hash` when sticky (the same key always lands on the same
    /// version while weights are unchanged), at random by weight otherwise.
    pub fn choose(&self, key_hash: Option<u64>) -> usize {
        let weights = self.weights.read().unwrap_or_else(|e| e.into_inner());
        let total: u64 = weights.iter().map(|w| *w as u64).sum();
        if total == 0 {
            return 0;
        }
        let mut x = match key_hash {
            Some(h) => h % total,
            None => rand::rng().random_range(0..total),
        };
        for (i, w) in weights.iter().enumerate() {
            if x < *w as u64 {
                return i;
            }
            x -= *w as u64;
        }
        weights.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_and_sticky_choice() {
        let router: Router<()> = Router {
            versions: vec![],
            weights: RwLock::new(vec![90, 10]),
        };
        let n = 20_000;
        let second = (0..n).filter(|_| router.choose(None) == 1).count() as f64 / n as f64;
        assert!((0.08..0.12).contains(&second), "{second}");
        for key in 0..100u64 {
            let v = router.choose(Some(key.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            for _ in 0..5 {
                assert_eq!(
                    router.choose(Some(key.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
                    v
                );
            }
        }
    }
}
