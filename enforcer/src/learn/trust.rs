//! Whose answers are believed: the interface roles (`--iface IF:inside|outside`) and the trusted
//! servers and clients (`--learn-from`, `--learn-for`). Without this any client could get any
//! address blocked for everyone, by asking a server of its own (or one it forges on its link).

use std::collections::HashMap;
use std::net::IpAddr;

use enforcer_common::{
    ROLE_BOTH, ROLE_INSIDE, ROLE_OUTSIDE, TRUST_CLIENT, TRUST_GATEWAY, TRUST_SERVER,
};
use ipnet::IpNet;

/// The trust prefixes with their `TRUST_*` bits, and the interfaces' `ROLE_*` codes by ifindex.
pub type DatapathTrust = (Vec<(IpNet, u32)>, Vec<(u32, u32)>);

/// Which side of the gateway an attached interface faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Clients: queries arrive here.
    Inside,
    /// Servers: answers arrive here.
    Outside,
    /// Either (no role given).
    Both,
}

impl Role {
    /// The code the datapath uses (`enforcer_common::ROLE_*`).
    pub fn code(self) -> u32 {
        match self {
            Self::Inside => ROLE_INSIDE,
            Self::Outside => ROLE_OUTSIDE,
            Self::Both => ROLE_BOTH,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inside => "inside",
            Self::Outside => "outside",
            Self::Both => "both",
        }
    }
}

/// The rule an answer must pass to be believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// Role of each attached interface by ifindex; empty when no roles were set.
    roles: HashMap<u32, Role>,
    /// Servers whose answers are believed for any client.
    learn_from: Vec<IpNet>,
    /// Clients whose answers are believed from any server.
    learn_for: Vec<IpNet>,
}

impl Trust {
    /// `roles` holds every attached interface; when all are `Both` no roles were set.
    pub fn new(roles: HashMap<u32, Role>, learn_from: Vec<IpNet>, learn_for: Vec<IpNet>) -> Self {
        let roles = if roles.values().all(|r| *r == Role::Both) {
            HashMap::new()
        } else {
            roles
        };
        Self {
            roles,
            learn_from,
            learn_for,
        }
    }

    /// No roles, every server trusted: learning as before trust existed (tests).
    #[cfg(test)]
    pub fn anyone() -> Self {
        Self::new(
            HashMap::new(),
            vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            Vec::new(),
        )
    }

    fn role(&self, ifindex: u32) -> Role {
        self.roles.get(&ifindex).copied().unwrap_or(Role::Both)
    }

    /// Whether an answer from `server` to `client` that arrived on `answer_if`, to a query that
    /// arrived on `query_if`, is believed.
    pub fn believes(&self, client: IpAddr, server: IpAddr, query_if: u32, answer_if: u32) -> bool {
        let sides = answer_if != query_if
            && self.role(query_if) != Role::Outside
            && self.role(answer_if) != Role::Inside;
        let trusted = self.learn_from.iter().any(|n| n.contains(&server))
            || self.learn_for.iter().any(|n| n.contains(&client));
        sides && trusted
    }

    /// The same rule for the datapath, which applies it before anything is held: the trust
    /// prefixes with their `TRUST_*` bits (the gateway's own addresses, to which answers come
    /// back under NAT, as `TRUST_GATEWAY`) and the interface roles.
    pub fn datapath_view(&self, gateway: &[IpAddr]) -> DatapathTrust {
        let prefixes = self
            .learn_from
            .iter()
            .map(|n| (*n, TRUST_SERVER))
            .chain(self.learn_for.iter().map(|n| (*n, TRUST_CLIENT)))
            .chain(gateway.iter().map(|a| (IpNet::from(*a), TRUST_GATEWAY)))
            .collect();
        let roles = self.roles.iter().map(|(i, r)| (*i, r.code())).collect();
        (prefixes, roles)
    }
}
