//! Edge: configuration, stage two: `[server]`, where and how the daemon listens and whom it believes.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use url::Url;

use super::Checker;
use crate::config::defaults::{DEFAULT_HSTS, DEFAULT_LISTEN, DEFAULT_TLS_CERT, DEFAULT_TLS_KEY};
use crate::config::error::ConfigError;
use crate::config::raw::{RawServer, Text, TextList};
use crate::config::validated::{AllowedOrigins, ClientIpHeader, ServerConfig, TlsFiles};

impl Checker<'_> {
    pub(super) fn server(&self, raw: &RawServer) -> Result<ServerConfig, ConfigError> {
        let listen = self.listen(raw)?;
        let tls = self.tls_files(raw, listen)?;
        let acme = raw.acme.as_ref().map(|acme| self.acme(acme)).transpose()?;
        let tls = match acme {
            None => tls,
            Some(_) => {
                self.nothing_beside_acme(raw)?;
                None
            }
        };
        let trusted_proxies =
            self.networks("server.trusted_proxies", raw.trusted_proxies.as_ref())?;
        let client_ip_header = self.client_ip_header(raw, &trusted_proxies)?;
        Ok(ServerConfig {
            listen,
            tls,
            acme,
            trusted_proxies,
            proxy_protocol_from: self.networks(
                "server.proxy_protocol_from",
                raw.proxy_protocol_from.as_ref(),
            )?,
            client_ip_header,
            monitor_addresses: self
                .networks("server.monitor_addresses", raw.monitor_addresses.as_ref())?,
            allowed_origins: self.allowed_origins(raw.allowed_origins.as_ref())?,
            hsts: self.hsts(raw.hsts.as_ref())?,
        })
    }

    fn listen(&self, raw: &RawServer) -> Result<SocketAddr, ConfigError> {
        match &raw.listen {
            None => Ok(DEFAULT_LISTEN),
            Some(v) => v.get_ref().parse::<SocketAddr>().map_err(|_| {
                self.at(
                    "server.listen",
                    v,
                    format!(
                        "must be an IP address and a port such as \"0.0.0.0:443\" or \
                         \"[::]:443\" (got {:?})",
                        v.get_ref()
                    ),
                )
            }),
        }
    }

    /// The certificate and key files, or `None` for plain HTTP (`tls = false`).
    fn tls_files(
        &self,
        raw: &RawServer,
        listen: SocketAddr,
    ) -> Result<Option<TlsFiles>, ConfigError> {
        // Checked even when TLS is off, so a typo does not wait for the day TLS is turned on.
        let cert = self.path_or("server.tls_cert", raw.tls_cert.as_ref(), DEFAULT_TLS_CERT)?;
        let key = self.path_or("server.tls_key", raw.tls_key.as_ref(), DEFAULT_TLS_KEY)?;
        match &raw.tls {
            Some(flag) if !*flag.get_ref() => {
                // `to_canonical` so that `[::ffff:127.0.0.1]` counts as the loopback it is.
                if !listen.ip().to_canonical().is_loopback() {
                    return Err(self.at(
                        "server.tls",
                        flag,
                        "plain HTTP is allowed only on a loopback listen address; put a reverse \
                         proxy in front or enable TLS",
                    ));
                }
                Ok(None)
            }
            _ => Ok(Some(TlsFiles { cert, key })),
        }
    }

    /// ACME brings its own certificates: files named beside it would never be read, and it
    /// needs TLS on.
    fn nothing_beside_acme(&self, raw: &RawServer) -> Result<(), ConfigError> {
        for (key, value) in [
            ("server.tls_cert", &raw.tls_cert),
            ("server.tls_key", &raw.tls_key),
        ] {
            if let Some(value) = value {
                return Err(self.at(
                    key,
                    value,
                    "cannot be set with [server.acme], which orders and renews the \
                     certificate itself: remove one of them",
                ));
            }
        }
        if let Some(flag) = raw.tls.as_ref().filter(|flag| !*flag.get_ref()) {
            return Err(self.at(
                "server.tls",
                flag,
                "turns TLS off, which [server.acme] needs: remove one of them",
            ));
        }
        Ok(())
    }

    fn client_ip_header(
        &self,
        raw: &RawServer,
        trusted_proxies: &[IpNet],
    ) -> Result<ClientIpHeader, ConfigError> {
        let Some(v) = &raw.client_ip_header else {
            return Ok(ClientIpHeader::default_for(trusted_proxies));
        };
        let name = v.get_ref().trim();
        let header = ClientIpHeader::parse(name).ok_or_else(|| {
            self.at(
                "server.client_ip_header",
                v,
                format!(
                    "must be one of {} (got {name:?})",
                    ClientIpHeader::NAMES.map(|n| format!("\"{n}\"")).join(", ")
                ),
            )
        })?;
        if header != ClientIpHeader::None && trusted_proxies.is_empty() {
            return Err(self.at(
                "server.client_ip_header",
                v,
                format!(
                    "names {name:?}, but no server.trusted_proxies are listed: the \
                     header of a client that is not a trusted proxy is never believed"
                ),
            ));
        }
        Ok(header)
    }

    fn hsts(&self, raw: Option<&Text>) -> Result<Option<String>, ConfigError> {
        let Some(value) = raw else {
            return Ok(Some(DEFAULT_HSTS.to_string()));
        };
        let text = value.get_ref().trim();
        if text.is_empty() {
            return Ok(None);
        }
        check_hsts(text).map_err(|why| {
            self.at(
                "server.hsts",
                value,
                format!(
                    "must be a Strict-Transport-Security value such as \"max-age=31536000\" \
                     (optionally with \"; includeSubDomains\"), or \"\" to send none: {why} \
                     (got {text:?})"
                ),
            )
        })?;
        Ok(Some(text.to_string()))
    }

    /// A list of networks in CIDR form or single addresses, host bits dropped (logs then show
    /// the network).
    fn networks(&self, key: &str, list: Option<&TextList>) -> Result<Vec<IpNet>, ConfigError> {
        let mut networks = Vec::new();
        for (i, v) in list.iter().flat_map(|l| l.get_ref()).enumerate() {
            let text = v.get_ref().as_str();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    self.at(
                        &format!("{key}[{i}]"),
                        v,
                        format!(
                            "must be a network in CIDR form such as \"10.0.0.0/8\" or \
                             \"fd00::/8\", or a single IP address (got {text:?})"
                        ),
                    )
                })?;
            networks.push(net.trunc());
        }
        Ok(networks)
    }

    fn allowed_origins(&self, raw: Option<&TextList>) -> Result<AllowedOrigins, ConfigError> {
        let items = raw.map(|l| l.get_ref().as_slice()).unwrap_or_default();
        if let Some((i, star)) = items.iter().enumerate().find(|(_, v)| v.get_ref() == "*") {
            if items.len() == 1 {
                return Ok(AllowedOrigins::Any);
            }
            return Err(self.at(
                &format!("server.allowed_origins[{i}]"),
                star,
                "\"*\" (any origin) must be the only entry when present; keep either \"*\" or \
                 the exact origins",
            ));
        }
        let mut origins: Vec<String> = Vec::new();
        for (i, v) in items.iter().enumerate() {
            let origin = normalise_origin(v.get_ref()).map_err(|why| {
                self.at(
                    &format!("server.allowed_origins[{i}]"),
                    v,
                    format!(
                        "must be an origin such as \"https://mygame.example\" or \
                         \"http://localhost:8080\" (\"http://localhost:*\" for any port): \
                         scheme, host and optional port, no path, query or fragment ({why}; got \
                         {:?})",
                        v.get_ref()
                    ),
                )
            })?;
            // Two spellings of one origin are harmless; keep one.
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(AllowedOrigins::List(origins))
    }
}

/// An origin as browsers send it in `Origin`: `scheme://host[:port]`, lower-case, default port
/// omitted; `scheme://host:*` stands for any port of that host (a local development server
/// moves between ports).
fn normalise_origin(text: &str) -> Result<String, String> {
    if let Some(host) = text.strip_suffix(":*") {
        let origin = normalise_origin(host)?;
        if origin
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err("it names a port and \":*\"".to_string());
        }
        return Ok(format!("{origin}:*"));
    }
    let url = Url::parse(text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the scheme is {:?}", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("it contains user info".to_string());
    }
    // `Url` turns an empty path into "/", so a trailing slash is tolerated here.
    if url.path() != "/" {
        return Err(format!("it has the path {:?}", url.path()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("it has a query or fragment".to_string());
    }
    Ok(url.origin().ascii_serialization())
}

/// A Strict-Transport-Security value: `;`-separated directives of printable ASCII, one of
/// them `max-age=<seconds>`.
fn check_hsts(text: &str) -> Result<(), String> {
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("only printable ASCII is allowed in a header".into());
    }
    let has_max_age = text.split(';').any(|directive| {
        directive
            .trim()
            .split_once('=')
            .is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("max-age")
                    && !value.trim().is_empty()
                    && value.trim().bytes().all(|b| b.is_ascii_digit())
            })
    });
    if has_max_age {
        Ok(())
    } else {
        Err("a max-age=<seconds> directive is required".into())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ipnet::IpNet;

    use crate::config::tests::{ok, refused};
    use crate::config::{AllowedOrigins, ClientIpHeader, TlsFiles};

    #[test]
    fn listen_must_be_a_socket_address() {
        let msg = refused("[server]\nlisten = \"localhost:443\"\n", "server.listen", 2);
        assert!(msg.contains("\"localhost:443\""), "{msg}");
        refused("[server]\nlisten = \"0.0.0.0\"\n", "server.listen", 2);
        assert_eq!(
            ok("[server]\nlisten = \"[::]:8443\"\n").server.listen,
            "[::]:8443".parse().unwrap()
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let msg = refused(
            "[server]\nlisten = \"0.0.0.0:80\"\ntls = false\n",
            "server.tls",
            3,
        );
        assert!(
            msg.contains("plain HTTP is allowed only on a loopback listen address"),
            "{msg}"
        );
        // The default listen address is not loopback either.
        refused("[server]\ntls = false\n", "server.tls", 2);
        refused(
            "[server]\nlisten = \"[::]:80\"\ntls = false\n",
            "server.tls",
            3,
        );

        let config = ok("[server]\nlisten = \"127.0.0.1:8080\"\ntls = false\n");
        assert_eq!(config.server.tls, None);
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            ok("[server]\nlisten = \"[::1]:8080\"\ntls = false\n")
                .server
                .tls,
            None
        );
        assert!(
            ok("[server]\nlisten = \"127.0.0.1:8443\"\ntls = true\n")
                .server
                .tls
                .is_some()
        );
    }

    #[test]
    fn tls_paths_resolve_against_the_config_folder() {
        let config = ok("[server]\ntls_cert = \"tls/cert.pem\"\ntls_key = \"/abs/key.pem\"\n");
        assert_eq!(
            config.server.tls,
            Some(TlsFiles {
                cert: PathBuf::from("/etc/tc/tls/cert.pem"),
                key: PathBuf::from("/abs/key.pem"),
            })
        );
        refused("[server]\ntls_cert = \"\"\n", "server.tls_cert", 2);
        refused("[server]\n\ntls_key = \" \"\n", "server.tls_key", 3);
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_single_addresses() {
        let config = ok(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.7\", \"::1\", \"fd00::1/8\"]\n",
        );
        let expected: Vec<IpNet> = ["10.0.0.0/8", "192.168.1.7/32", "::1/128", "fd00::/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(config.server.trusted_proxies, expected);

        let msg = refused(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
            "server.trusted_proxies[1]",
            2,
        );
        assert!(msg.contains("CIDR"), "{msg}");
        refused(
            "[server]\ntrusted_proxies = [\n\"proxy.local\"\n]\n",
            "server.trusted_proxies[0]",
            3,
        );
    }

    #[test]
    fn the_client_address_header_is_one_named_kind_and_needs_a_proxy() {
        assert_eq!(ok("").server.client_ip_header, ClientIpHeader::None);
        let proxied = "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n";
        assert_eq!(
            ok(proxied).server.client_ip_header,
            ClientIpHeader::XForwardedFor
        );
        for (name, header) in [
            ("Forwarded", ClientIpHeader::Forwarded),
            ("x-real-ip", ClientIpHeader::XRealIp),
            ("none", ClientIpHeader::None),
        ] {
            let text = format!("{proxied}client_ip_header = \"{name}\"\n");
            assert_eq!(ok(&text).server.client_ip_header, header);
        }
        let msg = refused(
            &format!("{proxied}client_ip_header = \"true-client-ip\"\n"),
            "server.client_ip_header",
            3,
        );
        assert!(msg.contains("\"x-forwarded-for\", \"forwarded\""), "{msg}");
        let msg = refused(
            "[server]\nclient_ip_header = \"forwarded\"\n",
            "server.client_ip_header",
            2,
        );
        assert!(msg.contains("trusted_proxies"), "{msg}");
    }

    #[test]
    fn origins_are_normalised() {
        let config = ok(
            "[server]\nallowed_origins = [\n  \"HTTPS://MyGame.Example:443/\",\n  \
             \"http://localhost:8080\",\n  \"https://a.example:8443\",\n  \
             \"http://b.example:80\",\n  \"https://mygame.example\",\n  \
             \"HTTP://Dev.Example:*\",\n]\n",
        );
        assert_eq!(
            config.server.allowed_origins,
            AllowedOrigins::List(vec![
                "https://mygame.example".to_string(),
                "http://localhost:8080".to_string(),
                "https://a.example:8443".to_string(),
                "http://b.example".to_string(),
                "http://dev.example:*".to_string(),
            ])
        );
        assert!(
            config
                .server
                .allowed_origins
                .allows("http://dev.example:5173")
        );
        assert!(
            !config
                .server
                .allowed_origins
                .allows("http://localhost:8081")
        );
        refused(
            "[server]\nallowed_origins = [\"http://dev.example:8080:*\"]\n",
            "server.allowed_origins[0]",
            2,
        );
        assert_eq!(
            ok("[server]\nallowed_origins = [\"*\"]\n")
                .server
                .allowed_origins,
            AllowedOrigins::Any
        );
    }

    #[test]
    fn bad_origins_are_refused() {
        refused(
            "[server]\nallowed_origins = [\"https://a.example\", \"*\"]\n",
            "server.allowed_origins[1]",
            2,
        );
        let msg = refused(
            "[server]\nallowed_origins = [\n\"https://a.example/landing\"]\n",
            "server.allowed_origins[0]",
            3,
        );
        assert!(msg.contains("path"), "{msg}");
        refused(
            "[server]\nallowed_origins = [\"https://a.example/?x=1\"]\n",
            "server.allowed_origins[0]",
            2,
        );
        refused(
            "[server]\nallowed_origins = [\"https://a.example#top\"]\n",
            "server.allowed_origins[0]",
            2,
        );
        refused(
            "[server]\nallowed_origins = [\"ftp://a.example\"]\n",
            "server.allowed_origins[0]",
            2,
        );
        refused(
            "[server]\nallowed_origins = [\"mygame.example\"]\n",
            "server.allowed_origins[0]",
            2,
        );
        refused(
            "[server]\nallowed_origins = [\"https://user@a.example\"]\n",
            "server.allowed_origins[0]",
            2,
        );
    }

    #[test]
    fn hsts_is_on_by_default_and_checked() {
        assert_eq!(ok("").server.hsts.as_deref(), Some("max-age=31536000"));
        let custom = ok("[server]\nhsts = \"max-age=600; includeSubDomains\"\n");
        assert_eq!(
            custom.server.hsts.as_deref(),
            Some("max-age=600; includeSubDomains")
        );
        assert_eq!(ok("[server]\nhsts = \"\"\n").server.hsts, None);
        refused("[server]\nhsts = \"includeSubDomains\"\n", "server.hsts", 2);
        refused("[server]\nhsts = \"max-age=soon\"\n", "server.hsts", 2);
        refused("[server]\nhsts = \"max-age=1\\u0000\"\n", "server.hsts", 2);
    }
}
