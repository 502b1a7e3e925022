//! Edge: configuration, stage two: `[attribution]`, which visit a game open is credited to.

use super::Checker;
use crate::config::defaults::DEFAULT_LOOKBACK_DAYS;
use crate::config::error::ConfigError;
use crate::config::raw::RawAttribution;
use crate::config::validated::{AttributionConfig, AttributionModel, PrivacyConfig};

impl Checker<'_> {
    pub(super) fn attribution(
        &self,
        raw: &RawAttribution,
        privacy: &PrivacyConfig,
    ) -> Result<AttributionConfig, ConfigError> {
        let model = match &raw.model {
            None => AttributionModel::LastTouch,
            Some(v) => match v.get_ref().as_str() {
                "last_touch" => AttributionModel::LastTouch,
                "first_touch" => AttributionModel::FirstTouch,
                other => {
                    return Err(self.at(
                        "attribution.model",
                        v,
                        format!("must be \"last_touch\" or \"first_touch\" (got {other:?})"),
                    ));
                }
            },
        };
        let lookback_days = match &raw.lookback_days {
            // Data older than the retention window is gone, so it cannot be looked back into.
            None => DEFAULT_LOOKBACK_DAYS.min(privacy.retention_days),
            Some(v) => self.between(
                "attribution.lookback_days",
                v,
                1,
                privacy.retention_days,
                " (privacy.retention_days)",
            )?,
        };
        Ok(AttributionConfig {
            model,
            lookback_days,
            require_consent: raw.require_consent.as_ref().is_some_and(|v| *v.get_ref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::AttributionModel;
    use crate::config::tests::{ok, refused};

    #[test]
    fn attribution_model_is_one_of_two() {
        let msg = refused(
            "[attribution]\nmodel = \"linear\"\n",
            "attribution.model",
            2,
        );
        assert!(msg.contains("\"last_touch\" or \"first_touch\""), "{msg}");
        assert_eq!(
            ok("[attribution]\nmodel = \"first_touch\"\n")
                .attribution
                .model,
            AttributionModel::FirstTouch
        );
    }

    #[test]
    fn lookback_days_fits_the_retention_window() {
        refused(
            "[attribution]\nlookback_days = 0\n",
            "attribution.lookback_days",
            2,
        );
        refused(
            "[attribution]\nlookback_days = 31\n",
            "attribution.lookback_days",
            2,
        );
        let msg = refused(
            "[privacy]\nretention_days = 7\n[attribution]\nlookback_days = 14\n",
            "attribution.lookback_days",
            4,
        );
        assert!(msg.contains("between 1 and 7"), "{msg}");
        // Omitted: 14, or the retention window when that is shorter.
        let config = ok("[privacy]\nretention_days = 7\n");
        assert_eq!(config.attribution.lookback_days, 7);
        let config = ok("[privacy]\nretention_days = 20\n");
        assert_eq!(config.attribution.lookback_days, 14);
        let config = ok("[attribution]\nlookback_days = 30\nrequire_consent = true\n");
        assert_eq!(config.attribution.lookback_days, 30);
        assert!(config.attribution.require_consent);
    }
}
