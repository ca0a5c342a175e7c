//! The one Prometheus writer of both engines, on `prometheus-client`'s text encoder (format
//! 0.0.4, which keeps `_total` in the HELP and TYPE lines of counters, as the pages always
//! had).
//!
//! The engines keep their counters in their own atomics and take a snapshot per scrape, so a
//! page is built from values, not from long-lived registered metrics: an [`Exposition`]
//! collects families in the order they are added and renders them once.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// A metrics page under construction. Families appear in the order added; samples in a
/// family in the order given.
///
/// ```
/// use tunnel_admin::Exposition;
///
/// let mut page = Exposition::new();
/// page.gauge("tunnel_clients", "Clients connected now.", 2);
/// page.counter_family("tunnel_bytes_total", "Payload bytes.")
///     .sample(&[("proxy", "web"), ("direction", "in")], 512);
/// assert_eq!(
///     page.render(),
///     concat!(
///         "# HELP tunnel_clients Clients connected now.\n",
///         "# TYPE tunnel_clients gauge\n",
///         "tunnel_clients 2\n",
///         "# HELP tunnel_bytes_total Payload bytes.\n",
///         "# TYPE tunnel_bytes_total counter\n",
///         "tunnel_bytes_total{proxy=\"web\",direction=\"in\"} 512\n",
///     )
/// );
/// ```
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

/// One metric family: a name, its help, its type and its samples.
#[derive(Debug)]
pub struct Family {
    /// Without the `_total` of counters: the encoder adds it.
    base: String,
    help: String,
    kind: Kind,
    samples: Vec<(Vec<(String, String)>, u64)>,
}

#[derive(Debug)]
enum Kind {
    Gauge,
    Counter,
    Histogram {
        /// Upper bound and the observations in that bucket alone (not cumulative).
        buckets: Vec<(f64, u64)>,
        sum: f64,
        count: u64,
    },
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.gauge_family(name, help).sample(&[], value);
    }

    /// A counter without labels. `name` is the exposed name, ending in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.counter_family(name, help).sample(&[], value);
    }

    /// A gauge family: add its samples with [`Family::sample`]. A family without samples
    /// still shows its HELP and TYPE lines.
    pub fn gauge_family(&mut self, name: &str, help: &str) -> &mut Family {
        self.push(name, help, Kind::Gauge)
    }

    /// A counter family; `name` is the exposed name, ending in `_total`.
    pub fn counter_family(&mut self, name: &str, help: &str) -> &mut Family {
        debug_assert!(
            name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.push(base, help, Kind::Counter)
    }

    /// A histogram without labels, from `cumulative` buckets (upper bound, observations at
    /// or below it, in increasing order), as an engine's atomics hold them. The `+Inf`
    /// bucket is `count`.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        cumulative: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        let mut below = 0;
        let buckets = cumulative
            .iter()
            .map(|&(bound, n)| {
                let own = n.saturating_sub(below);
                below = below.max(n);
                (bound, own)
            })
            .collect();
        self.push(
            name,
            help,
            Kind::Histogram {
                buckets,
                sum,
                count,
            },
        );
    }

    fn push(&mut self, base: &str, help: &str, kind: Kind) -> &mut Family {
        self.families.push(Family {
            base: base.to_owned(),
            help: help.to_owned(),
            kind,
            samples: Vec::new(),
        });
        let last = self.families.len() - 1;
        &mut self.families[last]
    }

    /// The page in the Prometheus text format 0.0.4, ending in a newline.
    pub fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Page(self.families)));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

impl Family {
    /// Add a sample with these labels (name, value) in this order.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: u64) -> &mut Self {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.push((labels, value));
        self
    }
}

/// The families of one page, handed to the encoder as a collector.
#[derive(Debug)]
struct Page(Vec<Family>);

impl Collector for Page {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let kind = match f.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
                Kind::Histogram { .. } => MetricType::Histogram,
            };
            let mut m = encoder.encode_descriptor(&f.base, &f.help, None, kind)?;
            if let Kind::Histogram {
                buckets,
                sum,
                count,
            } = &f.kind
            {
                m.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
                continue;
            }
            let counter = matches!(f.kind, Kind::Counter);
            for (labels, value) in &f.samples {
                if labels.is_empty() {
                    encode_value(&mut m, counter, value)?;
                } else {
                    encode_value(&mut m.encode_family(labels)?, counter, value)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(
    m: &mut MetricEncoder<'_>,
    counter: bool,
    value: &u64,
) -> Result<(), std::fmt::Error> {
    if counter {
        m.encode_counter::<NoLabelSet, _, u64>(value, None)
    } else {
        m.encode_gauge(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut page = Exposition::new();
        page.gauge_family("g", "G.")
            .sample(&[("proxy", "a\"b\\c\nd")], 1);
        assert!(page.render().contains("g{proxy=\"a\\\"b\\\\c\\nd\"} 1\n"),);
    }

    #[test]
    fn an_empty_family_keeps_its_help_and_type() {
        let mut page = Exposition::new();
        page.counter_family("tunnel_proxy_connections_total", "Connections served.");
        assert_eq!(
            page.render(),
            "# HELP tunnel_proxy_connections_total Connections served.\n\
             # TYPE tunnel_proxy_connections_total counter\n"
        );
    }

    #[test]
    fn a_histogram_from_cumulative_buckets() {
        let mut page = Exposition::new();
        page.histogram(
            "tunnel_handshake_seconds",
            "Handshakes.",
            &[(0.005, 1), (0.5, 3), (10.0, 3)],
            0.75,
            4,
        );
        let text = page.render();
        for line in [
            "# TYPE tunnel_handshake_seconds histogram\n",
            "tunnel_handshake_seconds_bucket{le=\"0.005\"} 1\n",
            "tunnel_handshake_seconds_bucket{le=\"0.5\"} 3\n",
            "tunnel_handshake_seconds_bucket{le=\"10\"} 3\n",
            "tunnel_handshake_seconds_bucket{le=\"+Inf\"} 4\n",
            "tunnel_handshake_seconds_sum 0.75\n",
            "tunnel_handshake_seconds_count 4\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
