//! Sites in the datapath: each site's variant (the actions of its `action-by-site` overrides,
//! shared by sites that override alike), the site prefixes, and the rule lists a variant
//! changes. Variant 0 is the policy's own actions: sites without overrides, and clients outside
//! every site.

use std::collections::BTreeMap;

use enforcer_common::{MAX_SITE_PREFIXES, MAX_VARIANTS, Rule};
use ipnet::IpNet;

use super::{CompileError, PrefixRules};
use crate::policy::{Policy, Sites};

/// What the datapath's site maps hold for one policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteTables {
    /// Variant `v` at index `v - 1`: platform id → the action code that variant gives it.
    pub variants: Vec<BTreeMap<u16, u8>>,
    /// Every site prefix, with its site's id and variant.
    pub prefixes: Vec<(IpNet, u32, u32)>,
}

/// The site tables of `policy` for `sites` (whose names `Sites::check_policy` has checked).
pub fn compile_sites(policy: &Policy, sites: &Sites) -> Result<SiteTables, CompileError> {
    let mut tables = SiteTables::default();
    for site in &sites.sites {
        let overrides: BTreeMap<u16, u8> = policy
            .platforms
            .iter()
            .enumerate()
            .filter_map(|(index, platform)| {
                let action = platform.action_for(Some(&site.name));
                (action != platform.action).then(|| (policy.platform_id(index), action.code()))
            })
            .collect();
        let variant = if overrides.is_empty() {
            0
        } else if let Some(i) = tables.variants.iter().position(|v| *v == overrides) {
            i + 1
        } else {
            tables.variants.push(overrides);
            tables.variants.len()
        };
        if variant >= MAX_VARIANTS as usize {
            return Err(CompileError::TooManyVariants {
                limit: MAX_VARIANTS - 1,
            });
        }
        let variant = u32::try_from(variant).unwrap_or(u32::MAX);
        tables
            .prefixes
            .extend(site.prefixes.iter().map(|p| (*p, site.id, variant)));
    }
    // Both generations share the trie.
    if tables.prefixes.len() * 2 > MAX_SITE_PREFIXES as usize {
        return Err(CompileError::TooManySitePrefixes {
            count: tables.prefixes.len(),
            limit: MAX_SITE_PREFIXES / 2,
        });
    }
    Ok(tables)
}

impl SiteTables {
    /// The rules under a prefix as `variant` sees them, when its overrides change them.
    pub fn rules_for(&self, rules: &PrefixRules, variant: u32) -> Option<PrefixRules> {
        let overrides = self.variants.get((variant as usize).checked_sub(1)?)?;
        let changed = |rule: &Rule| {
            overrides
                .get(&rule.platform)
                .is_some_and(|&action| action != rule.action)
        };
        if !rules.rules.iter().any(changed) {
            return None;
        }
        let full: BTreeMap<Rule, u8> = rules
            .rules
            .iter()
            .zip(&rules.prefix_lens)
            .map(|(rule, &len)| {
                let action = overrides
                    .get(&rule.platform)
                    .copied()
                    .unwrap_or(rule.action);
                (Rule { action, ..*rule }, len)
            })
            .collect();
        Some(PrefixRules::new(&full))
    }

    /// Variant ids in use (1-based).
    pub fn variant_ids(&self) -> impl Iterator<Item = u32> {
        (1..=self.variants.len()).filter_map(|v| u32::try_from(v).ok())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::compile::compile;
    use crate::policy::policy_of;

    #[test]
    fn sites_that_override_alike_share_a_variant_and_see_their_actions() {
        let policy = policy_of(&[
            "platform: teams\naction: monitor\naction-by-site: {a: drop, c: drop, d: monitor}\nmatch: [{prefixes: [198.18.0.0/16]}]\n",
            "platform: zoom\nmatch: [{prefixes: [198.18.1.0/24]}]\n",
        ]);
        let sites = Sites::parse(
            Path::new("s.yaml"),
            "a: [10.1.0.0/16]\nb: [10.2.0.0/16]\nc: [10.3.0.0/16]\nd: [10.4.0.0/16]\n",
        )
        .unwrap();
        let tables = compile_sites(&policy, &sites).unwrap();
        assert_eq!(tables.variants.len(), 1, "{tables:?}");
        let variant_of = |net: &str| {
            let net: IpNet = net.parse().unwrap();
            tables.prefixes.iter().find(|p| p.0 == net).unwrap().2
        };
        assert_eq!(variant_of("10.1.0.0/16"), 1);
        assert_eq!(variant_of("10.3.0.0/16"), 1);
        // b has no overrides, d's equals the platform's own action.
        assert_eq!(variant_of("10.2.0.0/16"), 0);
        assert_eq!(variant_of("10.4.0.0/16"), 0);

        let compiled = compile(&policy).unwrap();
        let teams = compiled.v4.iter().find(|(p, _)| p.len == 16).unwrap().1;
        let seen = tables.rules_for(teams, 1).unwrap();
        assert_eq!(seen.rules[0].action, enforcer_common::ACTION_DROP);
        // zoom's /24 holds teams' rule too: both drop now, and the longer prefix (zoom) wins.
        let nested = compiled.v4.iter().find(|(p, _)| p.len == 24).unwrap().1;
        let seen = tables.rules_for(nested, 1).unwrap();
        let best = usize::from(seen.order[0]);
        assert_eq!(seen.prefix_lens[best], 24);
        // Variant 0 and a list without teams are unchanged.
        assert!(tables.rules_for(teams, 0).is_none());
    }
}
