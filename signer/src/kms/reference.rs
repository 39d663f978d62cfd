//! The key named after `aws-kms:`: a key or alias ARN (which carries the
//! region to call), or a bare key id or `alias/NAME` (region from the SDK's
//! chain).

/// A KMS key id as KMS accepts it in `KeyId`, plus the region its ARN names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KmsKeyRef {
    pub(crate) key_id: String,
    pub(crate) region: Option<String>,
}

/// KMS's own limit for a KeyId parameter.
const MAX_KEY_ID: usize = 2048;

pub(crate) fn parse(reference: &str) -> Result<KmsKeyRef, String> {
    let reference = reference.trim();
    if reference.is_empty() {
        return Err("empty; expected arn:aws:kms:REGION:ACCOUNT:key/ID, an alias ARN, a key id or alias/NAME".into());
    }
    if reference.len() > MAX_KEY_ID {
        return Err(format!(
            "longer than KMS's {MAX_KEY_ID}-character key id limit"
        ));
    }
    if let Some(bad) = reference
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("contains {bad:?}"));
    }
    if !reference.starts_with("arn:") {
        return if reference.starts_with("alias/") && reference.len() > "alias/".len()
            || !reference.contains(['/', ':'])
        {
            Ok(KmsKeyRef {
                key_id: reference.to_string(),
                region: None,
            })
        } else {
            Err("expected an ARN, a key id or alias/NAME".into())
        };
    }
    // arn:PARTITION:kms:REGION:ACCOUNT:key/ID | alias/NAME
    let parts: Vec<&str> = reference.splitn(6, ':').collect();
    let [_, partition, service, region, account, resource] = parts[..] else {
        return Err("an ARN has six ':'-separated parts: arn:aws:kms:REGION:ACCOUNT:key/ID".into());
    };
    if !partition.starts_with("aws") {
        return Err(format!("partition {partition:?} is not an AWS partition"));
    }
    if service != "kms" {
        return Err(format!("names service {service:?}, not kms"));
    }
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!("region {region:?} is not a region name"));
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("account {account:?} is not a 12-digit account id"));
    }
    let named = resource
        .strip_prefix("key/")
        .or_else(|| resource.strip_prefix("alias/"));
    match named {
        Some(name) if !name.is_empty() => Ok(KmsKeyRef {
            key_id: reference.to_string(),
            region: Some(region.to_string()),
        }),
        _ => Err(format!(
            "resource {resource:?} is neither key/ID nor alias/NAME"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_carry_their_region() {
        let key = parse("arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab").unwrap();
        assert_eq!(key.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            key.key_id,
            "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab"
        );
        let alias = parse("arn:aws-cn:kms:cn-north-1:123456789012:alias/agent").unwrap();
        assert_eq!(alias.region.as_deref(), Some("cn-north-1"));
    }

    #[test]
    fn ids_and_alias_names_take_the_sdks_region() {
        assert_eq!(
            parse("1234abcd-12ab-34cd").unwrap(),
            KmsKeyRef {
                key_id: "1234abcd-12ab-34cd".into(),
                region: None
            }
        );
        assert_eq!(parse("alias/agent").unwrap().region, None);
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "alias/",
            "key/abc",
            "arn:aws:kms:eu-west-1:123456789012",
            "arn:aws:s3:eu-west-1:123456789012:key/x",
            "arn:aws:kms:EU:123456789012:key/x",
            "arn:aws:kms:eu-west-1:12345:key/x",
            "arn:aws:kms:eu-west-1:123456789012:key/",
            "arn:aws:kms:eu-west-1:123456789012:grant/x",
            "arn:gcp:kms:eu-west-1:123456789012:key/x",
            "arn:aws:kms:eu-west-1:123456789012:key/a b",
            "arn:aws:kms:eu-west-1:123456789012:key/a\u{0}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse(&"k".repeat(MAX_KEY_ID + 1)).is_err());
    }
}
