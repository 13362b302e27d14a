//! MQTT topic patterns with named captures (`sensors/{device}/{metric}`, `+`, `#`): the broker
//! filter to subscribe with, and matching a topic to its device and metric without allocating.

/// One level of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Lit(String),
    /// `+`: any one level.
    Plus,
    Device,
    Metric,
}

/// A parsed topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    levels: Vec<Level>,
    /// The pattern ends with `#`.
    tail: bool,
    /// Index of `{device}`, which takes extra levels when the topic is deeper than the pattern.
    device: Option<usize>,
}

/// What a topic yielded: slices of the topic itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captures<'t> {
    pub device: Option<&'t str>,
    pub metric: Option<&'t str>,
}

impl Pattern {
    /// Parses a pattern; the error says what is wrong.
    pub fn parse(p: &str) -> Result<Self, String> {
        if p.is_empty() {
            return Err("the topic pattern is empty".into());
        }
        let parts: Vec<&str> = p.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut device = None;
        let mut metric = false;
        let mut tail = false;
        for (i, part) in parts.iter().enumerate() {
            let l = match *part {
                "#" if i + 1 == parts.len() => {
                    tail = true;
                    continue;
                }
                "#" => return Err("`#` may only be the last level".into()),
                "+" => Level::Plus,
                "{device}" if device.is_none() => {
                    device = Some(levels.len());
                    Level::Device
                }
                "{metric}" if !metric => {
                    metric = true;
                    Level::Metric
                }
                "{device}" | "{metric}" => return Err(format!("{part} appears twice")),
                s if s.starts_with('{') || s.ends_with('}') => {
                    return Err(format!(
                        "unknown capture {s:?}: the captures are {{device}} and {{metric}}"
                    ))
                }
                s if s.contains(['+', '#']) => {
                    return Err(format!("{s:?}: `+` and `#` must fill a whole level"))
                }
                s => Level::Lit(s.to_owned()),
            };
            levels.push(l);
        }
        Ok(Pattern {
            levels,
            tail,
            device,
        })
    }

    /// `{device}` spans several levels only when nothing after it is `#`.
    fn greedy_device(&self) -> Option<usize> {
        if self.tail {
            None
        } else {
            self.device
        }
    }

    /// The subscription filter: captures become `+`; a multi-level `{device}` makes it end in `#`.
    pub fn filter(&self) -> String {
        let mut out: Vec<&str> = Vec::with_capacity(self.levels.len() + 1);
        for (i, l) in self.levels.iter().enumerate() {
            if Some(i) == self.greedy_device() {
                out.push("#");
                return out.join("/");
            }
            out.push(match l {
                Level::Lit(s) => s,
                Level::Plus | Level::Device | Level::Metric => "+",
            });
        }
        if self.tail {
            out.push("#");
        }
        out.join("/")
    }

    pub fn has_device(&self) -> bool {
        self.device.is_some()
    }

    pub fn has_metric(&self) -> bool {
        self.levels.contains(&Level::Metric)
    }

    /// Matches `topic`; `None` when it does not fit the pattern.
    pub fn captures<'t>(&self, topic: &'t str) -> Option<Captures<'t>> {
        // Byte ranges of the topic's levels, on the stack for usual depths.
        let mut spans: smallvec::SmallVec<[(usize, usize); 16]> = smallvec::SmallVec::new();
        let mut start = 0;
        for (i, b) in topic.bytes().enumerate() {
            if b == b'/' {
                spans.push((start, i));
                start = i + 1;
            }
        }
        spans.push((start, topic.len()));
        let n = self.levels.len();
        let extra = match (spans.len().checked_sub(n), self.tail, self.greedy_device()) {
            (None, _, _) => return None,
            (Some(0), _, _) => 0,
            (Some(_), true, _) => 0,
            (Some(e), false, Some(_)) => e,
            (Some(_), false, None) => return None,
        };
        let mut c = Captures {
            device: None,
            metric: None,
        };
        let mut t = 0; // index into spans
        for (i, l) in self.levels.iter().enumerate() {
            let (a, mut b) = spans[t];
            if Some(i) == self.greedy_device() {
                t += extra;
                b = spans[t].1;
            }
            let text = topic.get(a..b)?;
            match l {
                Level::Lit(s) if s != text => return None,
                Level::Device => c.device = Some(text),
                Level::Metric => c.metric = Some(text),
                _ => {}
            }
            t += 1;
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps<'t>(p: &str, t: &'t str) -> Option<(Option<&'t str>, Option<&'t str>)> {
        Pattern::parse(p)
            .expect("pattern")
            .captures(t)
            .map(|c| (c.device, c.metric))
    }

    #[test]
    fn filters_follow_the_pattern() {
        let f = |p: &str| Pattern::parse(p).expect("pattern").filter();
        assert_eq!(f("sensors/{device}/{metric}"), "sensors/#");
        assert_eq!(f("sensors/{metric}/{device}"), "sensors/+/#");
        assert_eq!(f("a/+/{device}/{metric}/#"), "a/+/+/+/#");
        assert_eq!(f("plant/boiler/temp"), "plant/boiler/temp");
        assert_eq!(f("x/#"), "x/#");
    }

    #[test]
    fn captures_single_and_multi_level_devices() {
        let p = "sensors/{device}/{metric}";
        assert_eq!(
            caps(p, "sensors/dev1/temp"),
            Some((Some("dev1"), Some("temp")))
        );
        assert_eq!(
            caps(p, "sensors/site2/floor3/dev1/temp"),
            Some((Some("site2/floor3/dev1"), Some("temp")))
        );
        assert_eq!(caps(p, "sensors/temp"), None, "too shallow");
        assert_eq!(caps(p, "other/dev1/temp"), None);
        assert_eq!(
            caps("{metric}/x/{device}", "t/x/a/b"),
            Some((Some("a/b"), Some("t")))
        );
        assert_eq!(caps("+/{device}/#", "a/b/c/d"), Some((Some("b"), None)));
        assert_eq!(caps("+/{device}/#", "a/b"), Some((Some("b"), None)));
        assert_eq!(caps("a/{metric}", "a/b/c"), None, "no # and no device");
        assert_eq!(caps("a/+/{metric}", "a/any/m"), Some((None, Some("m"))));
        assert_eq!(
            caps("s/{device}/{metric}", "s//m"),
            Some((Some(""), Some("m")))
        );
    }

    #[test]
    fn bad_patterns_say_why() {
        for (p, why) in [
            ("", "empty"),
            ("a/#/b", "last level"),
            ("a/{dev}", "unknown capture"),
            ("a/{device}/{device}", "twice"),
            ("a/b+", "whole level"),
        ] {
            let e = Pattern::parse(p).expect_err(p);
            assert!(e.contains(why), "{p}: {e}");
        }
    }
}
