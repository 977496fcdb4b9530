//! Deprecating a version: checked, kept with its definition (the hash
//! unchanged) and announced.

use std::sync::Arc;

use semver::Version;

use super::Catalog;
use crate::changes::ChangeKind;
use crate::definition::Capability;
use crate::lifecycle::{self, DeprecateError, Deprecation, Replacement};
use crate::naming::FunctionId;

impl Catalog {
    /// Deprecates `id@version`: checked (the version exists, the sunset is a
    /// future date, the replacement matches a version), persisted with the
    /// definition (its hash unchanged) and announced. `since` defaults to today.
    pub fn deprecate(
        &self,
        id: &FunctionId,
        version: &Version,
        mut deprecation: Deprecation,
    ) -> Result<Arc<Capability>, DeprecateError> {
        let today = (self.clock)();
        if let Some(since) = &deprecation.since {
            lifecycle::parse_date("since", since)?;
        } else {
            deprecation.since = Some(today.format(lifecycle::DATE_FORMAT).to_string());
        }
        if let Some(sunset) = &deprecation.sunset {
            let sunset = lifecycle::parse_date("sunset", sunset)?;
            if sunset <= today {
                return Err(DeprecateError::SunsetNotInFuture { sunset, today });
            }
        }
        let mut directory = self.write();
        if let Some(text) = &deprecation.replacement {
            let replacement = Replacement::parse(text)?;
            let matches_other = directory
                .functions
                .get(&replacement.id)
                .is_some_and(|versions| {
                    versions.keys().any(|v| {
                        replacement.requirement.matches(v)
                            && !(replacement.id == *id && v == version)
                    })
                });
            if !matches_other {
                let only_itself = replacement.id == *id && replacement.requirement.matches(version);
                return Err(if only_itself {
                    DeprecateError::SelfReplacement {
                        replacement: text.clone(),
                    }
                } else {
                    DeprecateError::ReplacementMissing {
                        replacement: text.clone(),
                    }
                });
            }
        }
        let entry = directory
            .functions
            .get_mut(id)
            .and_then(|versions| versions.get_mut(version))
            .ok_or_else(|| DeprecateError::UnknownVersion {
                id: id.to_string(),
                version: version.to_string(),
            })?;
        let capability = Arc::new(
            (*entry.capability)
                .clone()
                .with_deprecation(Some(deprecation)),
        );
        entry.capability = capability.clone();
        if let Some(writer) = &self.writer {
            writer.save(capability.clone());
        }
        self.publish(ChangeKind::Deprecated, id, version);
        Ok(capability)
    }
}
