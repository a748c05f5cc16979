//! The simulated Exchange Online organisation of one tenant: mailboxes (user, shared, room) with
//! their statistics, mailbox and recipient permissions, distribution groups, accepted domains
//! and the organisation config; the seeded generator that builds it; and the JSON state file.
//!
//! Storage is compact on purpose (a 100,000-mailbox tenant must stay far below 200 MB): GUIDs are
//! `u128`, dates are Unix seconds, and the JSON objects the API returns are built per page, never
//! stored. Every object carries a `serial` that only grows; collections stay sorted by it, which
//! is what paging cursors point at. Nothing here talks HTTP.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Recipient type details of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::enum_variant_names,
    reason = "Exchange's RecipientTypeDetails names"
)]
pub(crate) enum MailboxKind {
    UserMailbox,
    SharedMailbox,
    RoomMailbox,
}

impl MailboxKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MailboxKind::UserMailbox => "UserMailbox",
            MailboxKind::SharedMailbox => "SharedMailbox",
            MailboxKind::RoomMailbox => "RoomMailbox",
        }
    }
}

/// One mailbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Mailbox {
    pub serial: u64,
    pub kind: MailboxKind,
    pub name: String,
    pub alias: String,
    pub display_name: String,
    pub primary_smtp: String,
    pub upn: String,
    /// `EmailAddresses` as Exchange shows them: `SMTP:` primary, `smtp:` secondary.
    pub proxies: Vec<String>,
    #[serde(with = "guid_text")]
    pub guid: u128,
    #[serde(with = "guid_text")]
    pub exchange_guid: u128,
    #[serde(with = "guid_text")]
    pub external_id: u128,
    pub when_created: i64,
    pub when_changed: i64,
    pub hidden: bool,
    /// `None` is `Unlimited`.
    pub prohibit_send_quota: Option<u64>,
    pub archive: bool,
    /// Guids of the recipients in `GrantSendOnBehalfTo`.
    #[serde(with = "guid_list")]
    pub send_on_behalf: Vec<u128>,
    pub item_count: u32,
    pub total_size: u64,
    pub last_logon: Option<i64>,
    /// `ForwardingAddress`: the guid of a recipient in the organisation mail is forwarded to.
    #[serde(default, with = "guid_option")]
    pub forwarding_address: Option<u128>,
    /// `ForwardingSmtpAddress`: an address (usually outside the organisation), `smtp:` form.
    #[serde(default)]
    pub forwarding_smtp: Option<String>,
    /// `DeliverToMailboxAndForward`: keep a copy when forwarding.
    #[serde(default)]
    pub deliver_and_forward: bool,
    /// How often `Set-Mailbox -Password` reset the password (the password itself is not kept).
    #[serde(default)]
    pub password_resets: u32,
}

/// One distribution group (MailUniversalDistributionGroup).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Group {
    pub serial: u64,
    pub name: String,
    pub alias: String,
    pub display_name: String,
    pub primary_smtp: String,
    pub proxies: Vec<String>,
    #[serde(with = "guid_text")]
    pub guid: u128,
    pub when_created: i64,
    pub when_changed: i64,
    /// Guids of member mailboxes, in the order they were added.
    #[serde(with = "guid_list")]
    pub members: Vec<u128>,
}

/// A `FullAccess` (etc.) grant on a mailbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MailboxPermission {
    #[serde(with = "guid_text")]
    pub mailbox: u128,
    #[serde(with = "guid_text")]
    pub user: u128,
    pub rights: Vec<String>,
    pub inheritance: String,
}

/// A `SendAs` grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RecipientPermission {
    #[serde(with = "guid_text")]
    pub mailbox: u128,
    #[serde(with = "guid_text")]
    pub trustee: u128,
}

/// One accepted domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AcceptedDomain {
    pub domain: String,
    pub default: bool,
    pub initial: bool,
    #[serde(with = "guid_text")]
    pub guid: u128,
    pub when_created: i64,
}

/// The settable part of `Get-OrganizationConfig`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OrgConfig {
    #[serde(with = "guid_text")]
    pub guid: u128,
    pub name: String,
    pub display_name: String,
    pub when_created: i64,
    pub when_changed: i64,
    pub audit_disabled: bool,
    pub mail_tips_all_tips_enabled: bool,
    pub oauth2_client_profile_enabled: bool,
}

/// One tenant's organisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Org {
    pub tenant_id: String,
    pub domain: String,
    pub accepted: Vec<AcceptedDomain>,
    pub config: OrgConfig,
    pub mailboxes: Vec<Mailbox>,
    pub groups: Vec<Group>,
    pub mailbox_permissions: Vec<MailboxPermission>,
    pub recipient_permissions: Vec<RecipientPermission>,
    pub next_serial: u64,
}

/// What a recipient identity resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recipient {
    Mailbox(usize),
    Group(usize),
}

/// Which recipients an identity may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kinds {
    Mailboxes,
    Groups,
    Recipients,
}

/// The NetBIOS-style domain of `DOMAIN\alias` identities and the first DC of DNs.
pub(crate) const NETBIOS_DOMAIN: &str = "NAMPR00A001";

/// `LegacyExchangeDN`, in Exchange Online's form: the object GUID's hex and the alias.
pub(crate) fn legacy_dn(guid: u128, alias: &str) -> String {
    format!(
        "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn={:032x}-{}",
        guid,
        alias.to_ascii_lowercase()
    )
}

/// Case-insensitive match of `text` against `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let pattern = pattern.to_lowercase();
    let text = text.to_lowercase();
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Identity resolution failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolve {
    NotFound,
    Ambiguous,
}

/// splitmix64: a tiny, well-known generator whose output never changes with crate versions, so
/// `(seed, count)` always yields the same tenant.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed ^ 0x005e_ed0f_e705_1a7e)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// A random version-4 GUID.
    pub(crate) fn guid(&mut self) -> u128 {
        let raw = (u128::from(self.next()) << 64) | u128::from(self.next());
        (raw & !(0xf000_u128 << 64) & !(0xc000_u128 << 48))
            | (0x4000_u128 << 64)
            | (0x8000_u128 << 48)
    }
}

const FIRST: &[&str] = &[
    "Adele",
    "Alex",
    "Allan",
    "Bianca",
    "Brian",
    "Carla",
    "Chen",
    "Christie",
    "Debra",
    "Diego",
    "Elena",
    "Emily",
    "Enrico",
    "Farah",
    "Grady",
    "Hana",
    "Henrietta",
    "Isaiah",
    "Ivan",
    "Johanna",
    "Joni",
    "Kenji",
    "Lee",
    "Lidia",
    "Lynne",
    "Megan",
    "Miriam",
    "Nestor",
    "Nora",
    "Oscar",
    "Patti",
    "Pradeep",
    "Raul",
    "Sakura",
    "Stefan",
    "Tomas",
    "Uma",
    "Vance",
    "Wen",
    "Zoe",
];
const LAST: &[&str] = &[
    "Vance", "Wilber", "Deyoung", "Jones", "Adams", "Smith", "Garcia", "Holt", "Gonzalez",
    "Archer", "Sherman", "Cho", "Varkey", "Nguyen", "Bowen", "Khan", "Ito", "Meyer", "Novak",
    "Rossi", "Silva", "Kowalski", "Larsen", "Olsen", "Moreau", "Dubois", "Fischer", "Weber",
    "Tanaka", "Kim", "Patel", "Singh", "Brown", "Miller", "Davis", "Lopez", "Wilson", "Clark",
    "Lewis", "Young",
];
const SHARED: &[&str] = &[
    "Support",
    "Sales",
    "Info",
    "Billing",
    "Helpdesk",
    "Marketing",
    "Jobs",
];
const ROOMS: &[&str] = &["Conf Room", "Board Room", "Meeting Room", "Huddle"];
const TEAMS: &[&str] = &[
    "Finance",
    "Engineering",
    "Legal",
    "Operations",
    "Research",
    "HR",
];

/// 2019-01-01T00:00:00Z: generated objects are created after it.
const EPOCH_2019: i64 = 1_546_300_800;
const FIVE_YEARS: u64 = 5 * 365 * 86_400;

/// A generated tenant of at least this many mailboxes ends with the author fixtures
/// ([`Org::add_author_fixtures`]); the demo tenant's 25 do.
pub(crate) const FIXTURES_MIN_MAILBOXES: usize = 10;
/// Seed of the fixtures' own guids.
const FIXTURES_SEED: u64 = 0xf1c7_0de5;
/// The fixture shared mailboxes: display name, alias, and the delegates holding FullAccess
/// and SendAs (indexes into the tenant's user mailboxes, in order).
pub(crate) const FIXTURE_SHARED: &[(&str, &str, &[usize], &[usize])] = &[
    ("Reception Desk", "ReceptionDesk", &[1, 2], &[1]),
    ("Accounts Payable", "AccountsPayable", &[3], &[3, 4]),
];
/// A user mailbox forwarding to another inside the organisation (indexes of user mailboxes).
const FIXTURE_FORWARD_INTERNAL: (usize, usize) = (5, 6);
/// A user mailbox forwarding outside the organisation, keeping a copy.
const FIXTURE_FORWARD_EXTERNAL: (usize, &str) = (7, "records@fabrikam.example");

/// Default `ProhibitSendQuota` of an Exchange Online mailbox: 99 GB.
pub(crate) const DEFAULT_SEND_QUOTA: u64 = 106_300_440_576;

impl Org {
    /// Builds a tenant of `count` mailboxes deterministically from `seed`: about 90% user, 8%
    /// shared and 2% room mailboxes, one distribution group per 20 mailboxes (at least two),
    /// FullAccess and SendAs on shared mailboxes. The same `(seed, count, domain)` always gives
    /// the same organisation.
    pub(crate) fn generate(tenant_id: &str, domain: &str, seed: u64, count: usize) -> Org {
        let mut rng = SplitMix::new(seed);
        let mail_domain = mail_domain(domain);
        let mut accepted = vec![AcceptedDomain {
            domain: domain.to_owned(),
            default: true,
            initial: true,
            guid: rng.guid(),
            when_created: EPOCH_2019,
        }];
        if let Some(md) = &mail_domain {
            accepted.push(AcceptedDomain {
                domain: md.clone(),
                default: false,
                initial: false,
                guid: rng.guid(),
                when_created: EPOCH_2019,
            });
        }
        let label = domain.split('.').next().unwrap_or(domain).to_owned();
        let config = OrgConfig {
            guid: rng.guid(),
            name: domain.to_owned(),
            display_name: capitalise(&label),
            when_created: EPOCH_2019,
            when_changed: EPOCH_2019 + 86_400,
            audit_disabled: false,
            mail_tips_all_tips_enabled: true,
            oauth2_client_profile_enabled: true,
        };
        let mut org = Org {
            tenant_id: tenant_id.to_owned(),
            domain: domain.to_owned(),
            accepted,
            config,
            mailboxes: Vec::with_capacity(count),
            groups: Vec::new(),
            mailbox_permissions: Vec::new(),
            recipient_permissions: Vec::new(),
            next_serial: 1,
        };
        let mut taken = std::collections::HashSet::with_capacity(count);
        let mut names = std::collections::HashSet::with_capacity(count);
        let mut suffix: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        // The author fixtures take the last mailboxes of the count.
        let fixtures = count >= FIXTURES_MIN_MAILBOXES;
        let generated = if fixtures {
            count - FIXTURE_SHARED.len()
        } else {
            count
        };
        for i in 0..generated {
            let roll = rng.below(100);
            let kind = if i == 0 || roll < 90 {
                MailboxKind::UserMailbox
            } else if roll < 98 {
                MailboxKind::SharedMailbox
            } else {
                MailboxKind::RoomMailbox
            };
            let (display, alias_base) = match kind {
                MailboxKind::UserMailbox => {
                    let first = FIRST[rng.below(FIRST.len() as u64) as usize];
                    let last = LAST[rng.below(LAST.len() as u64) as usize];
                    (format!("{first} {last}"), format!("{first}{last}"))
                }
                MailboxKind::SharedMailbox => {
                    let what = SHARED[rng.below(SHARED.len() as u64) as usize];
                    (what.to_owned(), what.to_owned())
                }
                MailboxKind::RoomMailbox => {
                    let what = ROOMS[rng.below(ROOMS.len() as u64) as usize];
                    let n = rng.below(40) + 1;
                    (
                        format!("{what} {n}"),
                        format!("{}{n}", what.replace(' ', "")),
                    )
                }
            };
            // Suffixes continue where the last mailbox with the same base stopped, so a large
            // tenant does not retry every suffix from 1 (quadratic).
            let next = suffix.entry(alias_base.to_ascii_lowercase()).or_insert(1);
            let (mut alias, mut display_name) = if *next == 1 {
                (alias_base.clone(), display.clone())
            } else {
                (format!("{alias_base}{next}"), format!("{display} {next}"))
            };
            while taken.contains(&alias.to_ascii_lowercase())
                || names.contains(&display_name.to_ascii_lowercase())
            {
                *next += 1;
                alias = format!("{alias_base}{next}");
                display_name = format!("{display} {next}");
            }
            *next += 1;
            taken.insert(alias.to_ascii_lowercase());
            names.insert(display_name.to_ascii_lowercase());
            let created = EPOCH_2019 + rng.below(FIVE_YEARS) as i64;
            let changed = created + rng.below(FIVE_YEARS / 5) as i64;
            let item_count = match kind {
                MailboxKind::RoomMailbox => rng.below(500) as u32,
                _ => rng.below(60_000) as u32,
            };
            let total_size = u64::from(item_count) * (20_000 + rng.below(80_000));
            let last_logon = (rng.below(10) != 0).then(|| changed + rng.below(86_400 * 30) as i64);
            let archive = kind == MailboxKind::UserMailbox && rng.below(4) == 0;
            let mailbox = org.new_mailbox(
                kind,
                &display_name,
                &alias,
                None,
                &display_name,
                created,
                &mut rng,
            );
            let m = org.mailboxes.last_mut().map(|m| {
                m.when_changed = changed;
                m.item_count = item_count;
                m.total_size = total_size;
                m.last_logon = last_logon;
                m.archive = archive;
                m.guid
            });
            debug_assert_eq!(m, Some(mailbox));
        }
        // Delegation: every shared mailbox gets FullAccess and SendAs for one user.
        let users: Vec<u128> = org
            .mailboxes
            .iter()
            .filter(|m| m.kind == MailboxKind::UserMailbox)
            .map(|m| m.guid)
            .collect();
        let shared: Vec<u128> = org
            .mailboxes
            .iter()
            .filter(|m| m.kind == MailboxKind::SharedMailbox)
            .map(|m| m.guid)
            .collect();
        for mailbox in shared {
            if users.is_empty() {
                break;
            }
            let user = users[rng.below(users.len() as u64) as usize];
            org.mailbox_permissions.push(MailboxPermission {
                mailbox,
                user,
                rights: vec!["FullAccess".to_owned()],
                inheritance: "All".to_owned(),
            });
            org.recipient_permissions.push(RecipientPermission {
                mailbox,
                trustee: user,
            });
        }
        let groups = (count / 20).max(2);
        for g in 0..groups {
            let team = TEAMS[g % TEAMS.len()];
            let (name, alias) = if g < TEAMS.len() {
                (team.to_owned(), team.to_owned())
            } else {
                (
                    format!("{team} {}", g / TEAMS.len() + 1),
                    format!("{team}{}", g / TEAMS.len() + 1),
                )
            };
            let size = if users.is_empty() {
                0
            } else {
                1 + rng.below(10) as usize
            };
            let mut members: Vec<u128> = Vec::with_capacity(size);
            for _ in 0..size {
                let user = users[rng.below(users.len() as u64) as usize];
                if !members.contains(&user) {
                    members.push(user);
                }
            }
            let created = EPOCH_2019 + rng.below(FIVE_YEARS) as i64;
            let guid = rng.guid();
            let serial = org.take_serial();
            let primary = format!("{}@{}", alias.to_ascii_lowercase(), org.domain);
            org.groups.push(Group {
                serial,
                proxies: org.proxies_for(&alias.to_ascii_lowercase(), &primary),
                name: name.clone(),
                alias,
                display_name: name,
                primary_smtp: primary,
                guid,
                when_created: created,
                when_changed: created,
                members,
            });
        }
        if fixtures {
            org.add_author_fixtures(&users);
        }
        org
    }

    /// The objects example plugins and scripts need, the same in every generated tenant of
    /// [`FIXTURES_MIN_MAILBOXES`] or more: the shared mailboxes of [`FIXTURE_SHARED`] with
    /// delegates holding FullAccess and SendAs, a mailbox forwarding inside the organisation
    /// (`ForwardingAddress`) and one forwarding outside it (`ForwardingSmtpAddress`, keeping a
    /// copy). Delegates and forwarders are the first user mailboxes, so they are stable
    /// whatever the tenant's size. Their own generator keeps the rest of the tenant as it was.
    fn add_author_fixtures(&mut self, users: &[u128]) {
        let mut rng = SplitMix::new(FIXTURES_SEED);
        let user = |n: usize| users[n % users.len()];
        for (at, (display, alias, full_access, send_as)) in FIXTURE_SHARED.iter().enumerate() {
            let created = EPOCH_2019 + 86_400 * (30 + at as i64);
            let mailbox = self.new_mailbox(
                MailboxKind::SharedMailbox,
                display,
                alias,
                None,
                display,
                created,
                &mut rng,
            );
            if let Some(m) = self.mailboxes.last_mut() {
                m.item_count = 1_200 * (at as u32 + 1);
                m.total_size = u64::from(m.item_count) * 48_000;
            }
            for &n in *full_access {
                self.mailbox_permissions.push(MailboxPermission {
                    mailbox,
                    user: user(n),
                    rights: vec!["FullAccess".to_owned()],
                    inheritance: "All".to_owned(),
                });
            }
            for &n in *send_as {
                self.recipient_permissions.push(RecipientPermission {
                    mailbox,
                    trustee: user(n),
                });
            }
        }
        let internal_target = user(FIXTURE_FORWARD_INTERNAL.1);
        if let Some(m) = self
            .mailboxes
            .iter_mut()
            .find(|m| m.guid == user(FIXTURE_FORWARD_INTERNAL.0))
        {
            m.forwarding_address = Some(internal_target);
        }
        if let Some(m) = self
            .mailboxes
            .iter_mut()
            .find(|m| m.guid == user(FIXTURE_FORWARD_EXTERNAL.0))
        {
            m.forwarding_smtp = Some(format!("smtp:{}", FIXTURE_FORWARD_EXTERNAL.1));
            m.deliver_and_forward = true;
        }
    }

    pub(crate) fn take_serial(&mut self) -> u64 {
        let serial = self.next_serial;
        self.next_serial += 1;
        serial
    }

    fn proxies_for(&self, local: &str, primary: &str) -> Vec<String> {
        let mut proxies = vec![format!("SMTP:{primary}")];
        if let Some(md) = mail_domain(&self.domain) {
            proxies.push(format!("smtp:{local}@{md}"));
        }
        proxies
    }

    /// Appends a new mailbox with Exchange Online's defaults and returns its guid.
    #[allow(
        clippy::too_many_arguments,
        reason = "a constructor for one record type"
    )]
    pub(crate) fn new_mailbox(
        &mut self,
        kind: MailboxKind,
        name: &str,
        alias: &str,
        primary: Option<&str>,
        display_name: &str,
        now: i64,
        rng: &mut SplitMix,
    ) -> u128 {
        let serial = self.take_serial();
        let primary = primary
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}@{}", alias.to_ascii_lowercase(), self.domain));
        let local = primary.split('@').next().unwrap_or(alias).to_owned();
        let guid = rng.guid();
        self.mailboxes.push(Mailbox {
            serial,
            kind,
            name: name.to_owned(),
            alias: alias.to_owned(),
            display_name: display_name.to_owned(),
            proxies: self.proxies_for(&local, &primary),
            upn: primary.clone(),
            primary_smtp: primary,
            guid,
            exchange_guid: rng.guid(),
            external_id: rng.guid(),
            when_created: now,
            when_changed: now,
            hidden: false,
            prohibit_send_quota: Some(DEFAULT_SEND_QUOTA),
            archive: false,
            send_on_behalf: Vec::new(),
            item_count: 0,
            total_size: 0,
            last_logon: None,
            forwarding_address: None,
            forwarding_smtp: None,
            deliver_and_forward: false,
            password_resets: 0,
        });
        guid
    }

    /// The one resolver every cmdlet that takes a recipient identity uses, so no cmdlet is
    /// laxer or stricter than another. Like Exchange it trims surrounding whitespace (Unicode,
    /// U+3000 included), compares case-insensitively, and accepts every form of
    /// [`Org::answers_to`]. With `wildcards` (the `Identity` of Get- cmdlets that list) a `*`
    /// matches any run of characters and every match is returned; otherwise an identity that
    /// matches more than one object is [`Resolve::Ambiguous`], as in Exchange.
    pub(crate) fn resolve(
        &self,
        identity: &str,
        kinds: Kinds,
        wildcards: bool,
    ) -> Result<Vec<Recipient>, Resolve> {
        let needle = identity.trim();
        let pattern = wildcards && needle.contains('*');
        let guid = (!pattern).then(|| parse_guid(needle)).flatten();
        let mut found = Vec::new();
        if kinds != Kinds::Groups {
            for (i, m) in self.mailboxes.iter().enumerate() {
                let by_guid =
                    guid.is_some_and(|g| [m.guid, m.exchange_guid, m.external_id].contains(&g));
                if by_guid || self.answers_to(Recipient::Mailbox(i), needle, pattern) {
                    found.push(Recipient::Mailbox(i));
                }
            }
        }
        if kinds != Kinds::Mailboxes {
            for (i, g) in self.groups.iter().enumerate() {
                if guid == Some(g.guid) || self.answers_to(Recipient::Group(i), needle, pattern) {
                    found.push(Recipient::Group(i));
                }
            }
        }
        match found.len() {
            0 => Err(Resolve::NotFound),
            1 => Ok(found),
            _ if pattern => Ok(found),
            _ => Err(Resolve::Ambiguous),
        }
    }

    /// Whether a recipient answers to `needle` (a `*` pattern when `pattern`) by a name other
    /// than its GUIDs: name, alias, display name, each SMTP address with or without its
    /// `smtp:` prefix, UPN, and (not for patterns) its distinguished name, legacy Exchange DN
    /// and `DOMAIN\alias`.
    fn answers_to(&self, recipient: Recipient, needle: &str, pattern: bool) -> bool {
        let (name, alias, display, proxies, upn, guid) = match recipient {
            Recipient::Mailbox(i) => {
                let m = &self.mailboxes[i];
                (
                    &m.name,
                    &m.alias,
                    &m.display_name,
                    &m.proxies,
                    Some(&m.upn),
                    m.guid,
                )
            }
            Recipient::Group(i) => {
                let g = &self.groups[i];
                (&g.name, &g.alias, &g.display_name, &g.proxies, None, g.guid)
            }
        };
        let same = |text: &str| {
            if pattern {
                glob(needle, text)
            } else {
                text.eq_ignore_ascii_case(needle)
            }
        };
        if same(name) || same(alias) || same(display) || upn.is_some_and(|u| same(u)) {
            return true;
        }
        let address = needle.strip_prefix_ci("smtp:").unwrap_or(needle);
        let by_address = proxies.iter().any(|p| {
            let bare = p.split_once(':').map_or(p.as_str(), |(_, a)| a);
            if pattern {
                glob(address, bare)
            } else {
                bare.eq_ignore_ascii_case(address) || p.eq_ignore_ascii_case(needle)
            }
        });
        if by_address || pattern {
            return by_address;
        }
        same(&self.distinguished_name(alias))
            || same(&legacy_dn(guid, alias))
            || needle.split_once('\\').is_some_and(|(domain, user)| {
                domain.eq_ignore_ascii_case(NETBIOS_DOMAIN) && user.eq_ignore_ascii_case(alias)
            })
    }

    /// The distinguished name of the recipient with `alias`.
    pub(crate) fn distinguished_name(&self, alias: &str) -> String {
        format!(
            "CN={alias},OU={},OU=Microsoft Exchange Hosted Organizations,DC={NETBIOS_DOMAIN},DC=PROD,DC=OUTLOOK,DC=COM",
            self.domain
        )
    }

    /// Resolves a mailbox identity ([`Org::resolve`], mailboxes only, no wildcards).
    pub(crate) fn resolve_mailbox(&self, identity: &str) -> Result<usize, Resolve> {
        match self.resolve(identity, Kinds::Mailboxes, false)?.as_slice() {
            [Recipient::Mailbox(i)] => Ok(*i),
            _ => Err(Resolve::NotFound),
        }
    }

    /// Resolves a distribution group identity ([`Org::resolve`], groups only, no wildcards).
    pub(crate) fn resolve_group(&self, identity: &str) -> Result<usize, Resolve> {
        match self.resolve(identity, Kinds::Groups, false)?.as_slice() {
            [Recipient::Group(i)] => Ok(*i),
            _ => Err(Resolve::NotFound),
        }
    }

    /// Resolves any recipient, mailbox or group ([`Org::resolve`], no wildcards).
    pub(crate) fn resolve_recipient(&self, identity: &str) -> Result<Recipient, Resolve> {
        match self.resolve(identity, Kinds::Recipients, false)?.as_slice() {
            [one] => Ok(*one),
            _ => Err(Resolve::Ambiguous),
        }
    }

    pub(crate) fn mailbox_by_guid(&self, guid: u128) -> Option<&Mailbox> {
        self.mailboxes.iter().find(|m| m.guid == guid)
    }

    /// The name Exchange shows for a recipient guid (its UPN for mailboxes, name for groups).
    pub(crate) fn recipient_label(&self, guid: u128) -> String {
        if let Some(m) = self.mailbox_by_guid(guid) {
            return m.upn.clone();
        }
        self.groups
            .iter()
            .find(|g| g.guid == guid)
            .map_or_else(|| format_guid(guid), |g| g.name.clone())
    }

    /// Whether any mailbox or group already uses `address` (primary or proxy).
    pub(crate) fn address_in_use(&self, address: &str) -> bool {
        self.mailboxes
            .iter()
            .any(|m| address_matches(&m.proxies, address) || m.upn.eq_ignore_ascii_case(address))
            || self
                .groups
                .iter()
                .any(|g| address_matches(&g.proxies, address))
    }

    /// This organisation's accepted domains, as configured.
    pub(crate) fn accepted_domains(&self) -> impl Iterator<Item = &str> {
        self.accepted.iter().map(|d| d.domain.as_str())
    }

    /// Whether `domain` is one of this organisation's accepted domains.
    pub(crate) fn accepts_domain(&self, domain: &str) -> bool {
        self.accepted
            .iter()
            .any(|d| d.domain.eq_ignore_ascii_case(domain))
    }
}

fn address_matches(proxies: &[String], needle: &str) -> bool {
    let needle = needle.strip_prefix_ci("smtp:").unwrap_or(needle);
    proxies.iter().any(|p| {
        p.strip_prefix_ci("smtp:")
            .is_some_and(|a| a.eq_ignore_ascii_case(needle))
    })
}

trait StripCi {
    fn strip_prefix_ci(&self, prefix: &str) -> Option<&str>;
}

impl StripCi for str {
    fn strip_prefix_ci(&self, prefix: &str) -> Option<&str> {
        (self.len() >= prefix.len()
            && self.is_char_boundary(prefix.len())
            && self[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &self[prefix.len()..])
    }
}

/// `contoso.mail.onmicrosoft.com` for `contoso.onmicrosoft.com`.
fn mail_domain(domain: &str) -> Option<String> {
    domain
        .strip_suffix(".onmicrosoft.com")
        .filter(|label| !label.contains('.'))
        .map(|label| format!("{label}.mail.onmicrosoft.com"))
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Parses a hyphenated (or braced) GUID.
pub(crate) fn parse_guid(text: &str) -> Option<u128> {
    let text = text.trim_start_matches('{').trim_end_matches('}');
    if text.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(text).ok().map(|u| u.as_u128())
}

/// Lower-case hyphenated form.
pub(crate) fn format_guid(guid: u128) -> String {
    uuid::Uuid::from_u128(guid).to_string()
}

mod guid_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(guid: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_guid(*guid))
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_guid(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a GUID: {text}")))
    }
}

mod guid_list {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(guids: &[u128], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(guids.iter().map(|g| super::format_guid(*g)))
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u128>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| {
                super::parse_guid(t)
                    .ok_or_else(|| serde::de::Error::custom(format!("not a GUID: {t}")))
            })
            .collect()
    }
}

mod guid_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(guid: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
        match guid {
            Some(g) => s.serialize_some(&super::format_guid(*g)),
            None => s.serialize_none(),
        }
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u128>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| {
                super::parse_guid(&t)
                    .ok_or_else(|| serde::de::Error::custom(format!("not a GUID: {t}")))
            })
            .transpose()
    }
}

/// The state file's contents.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StateFile {
    /// Format version (1).
    pub version: u32,
    pub tenants: Vec<Org>,
}

/// Reads a state file; `Ok(None)` when it does not exist.
pub(crate) fn load(path: &Path) -> Result<Option<StateFile>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::state("read state file", path, e)),
    };
    let state: StateFile = serde_json::from_slice(&bytes).map_err(|e| {
        Error::state(
            "parse state file",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    if state.version != 1 {
        return Err(Error::state(
            "parse state file",
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unsupported state file version {}", state.version),
            ),
        ));
    }
    Ok(Some(state))
}

/// Writes `bytes` atomically: a temporary file in the same directory, then rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::state("create temporary state file in", dir, e))?;
    std::io::Write::write_all(&mut temp, bytes)
        .map_err(|e| Error::state("write", temp.path(), e))?;
    temp.as_file()
        .sync_all()
        .map_err(|e| Error::state("sync", temp.path(), e))?;
    temp.persist(path)
        .map_err(|e| Error::state("rename temporary file to", path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_unique() {
        let a = Org::generate("t", "contoso.onmicrosoft.com", 7, 500);
        let b = Org::generate("t", "contoso.onmicrosoft.com", 7, 500);
        let c = Org::generate("t", "contoso.onmicrosoft.com", 8, 500);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert_ne!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&c).unwrap()
        );
        let mut aliases: Vec<_> = a
            .mailboxes
            .iter()
            .map(|m| m.alias.to_ascii_lowercase())
            .collect();
        aliases.sort();
        aliases.dedup();
        assert_eq!(aliases.len(), 500);
        assert!(
            a.mailboxes
                .iter()
                .any(|m| m.kind == MailboxKind::SharedMailbox)
        );
        assert!(a.mailboxes.windows(2).all(|w| w[0].serial < w[1].serial));
    }

    #[test]
    fn resolution_by_every_identity_form() {
        let org = Org::generate("t", "contoso.onmicrosoft.com", 1, 30);
        let m = &org.mailboxes[3];
        let md = format!(
            "{}@contoso.mail.onmicrosoft.com",
            m.alias.to_ascii_lowercase()
        );
        for id in [
            m.name.to_uppercase(),
            m.alias.clone(),
            m.primary_smtp.to_uppercase(),
            md,
            format_guid(m.guid).to_uppercase(),
            format_guid(m.exchange_guid),
        ] {
            assert_eq!(org.resolve_mailbox(&id), Ok(3), "{id}");
        }
        assert_eq!(org.resolve_mailbox("nobody"), Err(Resolve::NotFound));
    }

    #[test]
    fn one_resolver_answers_to_every_form_exchange_accepts() {
        let mut org = Org::generate("t", "contoso.onmicrosoft.com", 1, 30);
        let m = org.mailboxes[5].clone();
        let primary = m.primary_smtp.clone();
        let forms = [
            primary.to_uppercase(),
            format!(" {primary}"),
            format!("\t{primary}\u{3000}"),
            format!("smtp:{primary}"),
            format!("SMTP:{primary}"),
            format!(
                "{}@contoso.mail.onmicrosoft.com",
                m.alias.to_ascii_lowercase()
            ),
            m.alias.to_uppercase(),
            m.name.clone(),
            m.display_name.clone(),
            format_guid(m.guid),
            format!("{{{}}}", format_guid(m.exchange_guid)),
            format_guid(m.external_id),
            org.distinguished_name(&m.alias),
            legacy_dn(m.guid, &m.alias),
            format!("{NETBIOS_DOMAIN}\\{}", m.alias),
            m.upn.clone(),
        ];
        for form in &forms {
            assert_eq!(org.resolve_mailbox(form), Ok(5), "{form:?}");
            assert_eq!(
                org.resolve_recipient(form),
                Ok(Recipient::Mailbox(5)),
                "{form:?}"
            );
        }
        // Wildcards only where the cmdlet takes them.
        let prefix = format!("{}*", &m.alias[..m.alias.len() - 1]);
        assert!(org.resolve(&prefix, Kinds::Mailboxes, true).is_ok());
        assert_eq!(
            org.resolve("*", Kinds::Mailboxes, false),
            Err(Resolve::NotFound)
        );
        assert!(org.resolve("*", Kinds::Recipients, true).unwrap().len() > 30);
        // A display name one mailbox shares with another's name is ambiguous.
        org.mailboxes[6].display_name = m.name.clone();
        assert_eq!(org.resolve_mailbox(&m.name), Err(Resolve::Ambiguous));
        assert!(glob("a*c*e", "AbCdE") && !glob("a*c", "abcd") && glob("*", ""));
    }
}
