//! Which copy a read goes to.

use std::fmt;

/// How reads pick among the working copies of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPolicy {
    /// The copy whose leg has the fewest blocks outstanding (md's read_balance idea).
    #[default]
    LeastOutstanding,
    /// Copies in turn.
    RoundRobin,
    /// This leg first; others only after an error there, or when it is far busier than the
    /// least busy other copy (md's write-mostly idea, for a slow or remote leg).
    Preferred(u32),
}

/// "Far busier": the preferred leg is skipped once it has this many times the outstanding
/// blocks of the least busy other copy, plus this slack (so an idle mirror always reads it).
const PREFERRED_FACTOR: u64 = 4;
const PREFERRED_SLACK_BLOCKS: u64 = 256;

impl ReadPolicy {
    /// Parses a policy name; `preferred` needs `preferred_leg`.
    pub fn parse(name: &str, preferred_leg: Option<u32>) -> Result<Self, String> {
        match (name, preferred_leg) {
            ("least_outstanding", None) => Ok(ReadPolicy::LeastOutstanding),
            ("round_robin", None) => Ok(ReadPolicy::RoundRobin),
            ("preferred", Some(leg)) => Ok(ReadPolicy::Preferred(leg)),
            ("preferred", None) => Err("preferred_leg: required with read_policy preferred".into()),
            ("least_outstanding" | "round_robin", Some(_)) => {
                Err("preferred_leg: only applies to read_policy preferred".into())
            }
            (other, _) => Err(format!(
                "read_policy: unknown policy '{other}' (least_outstanding, round_robin or preferred)"
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ReadPolicy::LeastOutstanding => "least_outstanding",
            ReadPolicy::RoundRobin => "round_robin",
            ReadPolicy::Preferred(_) => "preferred",
        }
    }

    /// The leg to read from among `candidates` (leg, outstanding blocks); `turn` advances the
    /// round robin. `None` when there is no candidate. Takes a cloneable iterator so the I/O
    /// path needs no buffer.
    pub fn choose<I>(&self, candidates: I, turn: u64) -> Option<u32>
    where
        I: Iterator<Item = (u32, u64)> + Clone,
    {
        let least = |c: I| c.min_by_key(|&(_, out)| out).map(|(leg, _)| leg);
        match *self {
            ReadPolicy::LeastOutstanding => least(candidates),
            ReadPolicy::RoundRobin => {
                let n = candidates.clone().count() as u64;
                candidates.map(|(leg, _)| leg).nth((turn % n.max(1)) as usize)
            }
            ReadPolicy::Preferred(leg) => {
                let Some((_, out)) = candidates.clone().find(|c| c.0 == leg) else {
                    return least(candidates);
                };
                match candidates.clone().filter(|c| c.0 != leg).map(|c| c.1).min() {
                    Some(o) if out > o * PREFERRED_FACTOR + PREFERRED_SLACK_BLOCKS => least(candidates),
                    _ => Some(leg),
                }
            }
        }
    }
}

impl fmt::Display for ReadPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferred_leg_first_unless_far_busier() {
        let p = ReadPolicy::Preferred(1);
        let choose = |c: &[(u32, u64)]| p.choose(c.iter().copied(), 0);
        assert_eq!(choose(&[(0, 0), (1, 100)]), Some(1));
        assert_eq!(choose(&[(0, 10), (1, 4 * 10 + 256)]), Some(1));
        assert_eq!(choose(&[(0, 10), (1, 4 * 10 + 257)]), Some(0));
        // Not a copy of this block (or failed): the least busy.
        assert_eq!(choose(&[(0, 5), (2, 1)]), Some(2));
        assert_eq!(choose(&[]), None);
        assert_eq!(ReadPolicy::RoundRobin.choose([(3, 0), (5, 0)].into_iter(), 3), Some(5));
    }

    #[test]
    fn parse_checks_the_leg_argument() {
        assert_eq!(ReadPolicy::parse("preferred", Some(2)), Ok(ReadPolicy::Preferred(2)));
        assert!(ReadPolicy::parse("preferred", None)
            .unwrap_err()
            .starts_with("preferred_leg:"));
        assert!(ReadPolicy::parse("fastest", None)
            .unwrap_err()
            .starts_with("read_policy:"));
        assert_eq!(
            ReadPolicy::parse("round_robin", None).unwrap().to_string(),
            "round_robin"
        );
    }
}
