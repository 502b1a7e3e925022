//! Ingest: the closed list of refusal codes, the JSON `error` of every 4xx and 5xx the API
//! answers. One code per fault, whichever path (form, JSON, batch, query) the fault came by;
//! `docs/api.md` lists them and a test holds the two lists equal.

macro_rules! codes {
    ($($variant:ident = $text:literal,)*) => {
        /// A refusal's machine-readable code; stable, part of the API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in the order `docs/api.md` lists them.
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }
        }
    };
}

codes! {
    // The body or the query.
    InvalidJson = "invalid_json",
    InvalidEncoding = "invalid_encoding",
    UnknownField = "unknown_field",
    DuplicateField = "duplicate_field",
    MissingField = "missing_field",
    InvalidField = "invalid_field",
    InvalidQuery = "invalid_query",
    // A field's value.
    InvalidUrl = "invalid_url",
    InvalidId = "invalid_id",
    InvalidGame = "invalid_game",
    UnknownGame = "unknown_game",
    InvalidUserId = "invalid_user_id",
    InvalidEventName = "invalid_event_name",
    UnknownEvent = "unknown_event",
    InvalidIp = "invalid_ip",
    InvalidTimeStamp = "invalid_time_stamp",
    TimeStampOutOfWindow = "time_stamp_out_of_window",
    InvalidPlatform = "invalid_platform",
    InvalidStorefront = "invalid_storefront",
    InvalidEventId = "invalid_event_id",
    EmptyBatch = "empty_batch",
    BatchTooLarge = "batch_too_large",
    // The request itself.
    NotFound = "not_found",
    UnknownLink = "unknown_link",
    MethodNotAllowed = "method_not_allowed",
    UnsupportedMediaType = "unsupported_media_type",
    PayloadTooLarge = "payload_too_large",
    LengthRequired = "length_required",
    BodyTimeout = "body_timeout",
    BadBody = "bad_body",
    OriginNotAllowed = "origin_not_allowed",
    // Keys and tokens.
    MissingMeasureKey = "missing_measure_key",
    InvalidMeasureKey = "invalid_measure_key",
    MissingToken = "missing_token",
    InvalidToken = "invalid_token",
    InsufficientScope = "insufficient_scope",
    RateLimited = "rate_limited",
    // The collector's side.
    NotReady = "not_ready",
    NoCertificate = "no_certificate",
    Overloaded = "overloaded",
    DiskFull = "disk_full",
    NotDurable = "not_durable",
    Unavailable = "unavailable",
    Internal = "internal",
}

impl std::fmt::Display for Code {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn codes_are_distinct_snake_case_words() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.split('_')
                    .all(|word| !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase())),
                "{text}"
            );
        }
    }
}
