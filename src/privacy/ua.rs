//! Privacy: the User-Agent reduced to device class, OS family and browser family.
//!
//! The raw string is parsed and dropped. A small cache keyed by the string's BLAKE3 digest
//! (not the string) saves the ~2 us woothee parse for the handful of agents that make most
//! traffic.

use std::collections::HashMap;
use std::sync::Mutex;

/// What the store keeps of a User-Agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// woothee's category: pc, smartphone, mobilephone, appliance, misc or unknown.
    pub category: String,
    pub os: String,
    pub browser: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Agent {
    Device(Device),
    /// Counted in metrics only, never stored.
    Crawler,
}

const CACHE_LIMIT: usize = 4096;

pub(crate) struct UaClassifier {
    parser: woothee::parser::Parser,
    cache: Mutex<HashMap<[u8; 16], Agent>>,
}

impl std::fmt::Debug for UaClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UaClassifier")
    }
}

impl Default for UaClassifier {
    fn default() -> Self {
        UaClassifier {
            parser: woothee::parser::Parser::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl UaClassifier {
    pub(crate) fn classify(&self, user_agent: Option<&str>) -> Agent {
        let ua = user_agent.unwrap_or("").trim();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&blake3::hash(ua.as_bytes()).as_bytes()[..16]);
        if let Ok(cache) = self.cache.lock()
            && let Some(agent) = cache.get(&digest)
        {
            return agent.clone();
        }
        let agent = self.parse(ua);
        if let Ok(mut cache) = self.cache.lock() {
            // Crude but bounded: the working set of agents refills quickly after a reset.
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(digest, agent.clone());
        }
        agent
    }

    fn parse(&self, ua: &str) -> Agent {
        let Some(result) = self.parser.parse(ua) else {
            return Agent::Device(Device {
                category: "unknown".into(),
                os: "unknown".into(),
                browser: "unknown".into(),
            });
        };
        if result.category == "crawler" {
            return Agent::Crawler;
        }
        Agent::Device(Device {
            category: label(result.category),
            os: label(result.os),
            browser: label(result.name),
        })
    }
}

fn label(value: &str) -> String {
    if value.is_empty() || value == "UNKNOWN" {
        "unknown".into()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
    const WINDOWS_CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

    #[test]
    fn classifies_devices() {
        let ua = UaClassifier::default();
        let Agent::Device(phone) = ua.classify(Some(IPHONE)) else {
            panic!("iPhone is not a crawler");
        };
        assert_eq!(phone.category, "smartphone");
        assert_eq!(phone.os, "iPhone");
        assert_eq!(phone.browser, "Safari");
        let Agent::Device(pc) = ua.classify(Some(WINDOWS_CHROME)) else {
            panic!("Chrome is not a crawler");
        };
        assert_eq!(
            (pc.category.as_str(), pc.browser.as_str()),
            ("pc", "Chrome")
        );
        // Cached answers are the same answers.
        assert_eq!(ua.classify(Some(IPHONE)), Agent::Device(phone));
    }

    #[test]
    fn crawlers_and_missing_agents() {
        let ua = UaClassifier::default();
        assert_eq!(
            ua.classify(Some(
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
            )),
            Agent::Crawler
        );
        let Agent::Device(none) = ua.classify(None) else {
            panic!("a missing agent is not a crawler");
        };
        assert_eq!(none.category, "unknown");
    }
}
