//! Given-name diminutives: `Bob` ~ `Robert`, `Liz` ~ `Elizabeth`, `Hans` ~ `Johannes`.
//!
//! Source: a short list written for this crate from common, well-attested English hypocorisms
//! (the pairs every English nickname list has, e.g. Bob/Robert, Bill/William, Peggy/Margaret)
//! and a few German, French and Spanish ones (Hans/Johannes, Sepp/Josef, Pepe/José). It is
//! deliberately small: a pair that is not here only loses the nickname bonus, it is still
//! compared by spelling. Longer lists (for example the Apache-2.0 `carltonnorthern/nicknames`
//! CSV) can replace [`GROUPS`] without any other change. Names are in [`super::fold`] form.
//!
//! A nickname may belong to several groups (`Alex` is Alexander or Alexandra); two names are
//! related when they share a group.

use std::collections::HashMap;
use std::sync::LazyLock;

/// Groups of names for one person: the formal name first, then its diminutives.
pub const GROUPS: &[&[&str]] = &[
    &["robert", "bob", "bobby", "rob", "robbie", "bert"],
    &["william", "bill", "billy", "will", "willy", "liam"],
    &[
        "elizabeth",
        "liz",
        "lizzie",
        "beth",
        "betty",
        "betsy",
        "eliza",
        "elisabeth",
        "lisa",
        "elise",
    ],
    &[
        "margaret",
        "maggie",
        "meg",
        "peggy",
        "marge",
        "margie",
        "greta",
        "margarete",
    ],
    &["richard", "rick", "ricky", "dick", "rich", "richie"],
    &["edward", "ed", "eddie", "ted", "teddy", "ned"],
    &["john", "jack", "johnny", "jon"],
    &["james", "jim", "jimmy", "jamie"],
    &["joseph", "joe", "joey", "jose", "josef", "sepp", "pepe"],
    &["michael", "mike", "mikey", "mick", "micha"],
    &["thomas", "tom", "tommy"],
    &["charles", "charlie", "chuck", "chas"],
    &["henry", "hank", "harry", "hal"],
    &[
        "katherine",
        "kate",
        "kathy",
        "katie",
        "kat",
        "catherine",
        "cathy",
        "kathrin",
        "katharina",
        "katrin",
    ],
    &["christopher", "chris", "kit", "topher"],
    &["christine", "chris", "chrissy", "tina", "christina"],
    &[
        "alexander",
        "alex",
        "sasha",
        "sascha",
        "xander",
        "alejandro",
        "alexandre",
    ],
    &["alexandra", "alex", "sasha", "sandra", "alexa"],
    &["samuel", "sam", "sammy"],
    &["samantha", "sam", "sammy"],
    &["daniel", "dan", "danny"],
    &["david", "dave", "davey"],
    &["benjamin", "ben", "benny"],
    &["anthony", "tony", "antonio", "anton"],
    &["andrew", "andy", "drew", "andreas", "andre"],
    &["patricia", "pat", "patty", "tricia", "trish"],
    &["patrick", "pat", "paddy"],
    &["nicholas", "nick", "nicky", "klaus", "nikolaus", "nicolas"],
    &["matthew", "matt", "matthias", "mathias"],
    &["stephen", "steve", "steven", "stefan", "stephan"],
    &["susan", "sue", "susie", "suzanne", "susanne"],
    &["jennifer", "jen", "jenny"],
    &["rebecca", "becky", "becca"],
    &["deborah", "deb", "debbie"],
    &["victoria", "vicky", "tori"],
    &["gregory", "greg"],
    &["jonathan", "jon", "jonny"],
    &["timothy", "tim", "timmy"],
    &["kenneth", "ken", "kenny"],
    &["ronald", "ron", "ronnie"],
    &["donald", "don", "donnie"],
    &["peter", "pete"],
    &["frederick", "fred", "freddie", "fritz", "friedrich"],
    &["johannes", "hans", "johann", "jo"],
    &["wolfgang", "wolf"],
    &["mary", "molly", "polly", "mae", "maria", "marie"],
    &["sarah", "sally", "sadie", "sara"],
    &["dorothy", "dot", "dottie", "dora"],
    &["abigail", "abby", "gail"],
    &[
        "francis",
        "frank",
        "fran",
        "franz",
        "francisco",
        "paco",
        "francois",
    ],
    &["lawrence", "larry", "laurence", "lorenz"],
    &["leonard", "leo", "len", "lenny"],
    &["raymond", "ray"],
    &["eugene", "gene"],
    &["jacqueline", "jackie", "jacky"],
    &["guillermo", "memo"],
    &["manuel", "manolo", "manu"],
    &["ignacio", "nacho"],
];

static INDEX: LazyLock<HashMap<&'static str, Vec<u16>>> = LazyLock::new(|| {
    let mut m: HashMap<&'static str, Vec<u16>> = HashMap::new();
    for (i, group) in GROUPS.iter().enumerate() {
        let gid = u16::try_from(i).unwrap_or(u16::MAX);
        for name in group.iter() {
            m.entry(*name).or_default().push(gid);
        }
    }
    m
});

/// Are two folded given names diminutives of one another (or the same name)?
pub fn related(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (INDEX.get(a), INDEX.get(b)) {
        (Some(x), Some(y)) => x.iter().any(|g| y.contains(g)),
        _ => false,
    }
}

/// The formal name of the first group a folded name is in (`bob` → `robert`), or the name
/// itself. Used for blocking keys, so `Bob Smith` and `Robert Smith` share one.
pub fn canonical(name: &str) -> &str {
    INDEX
        .get(name)
        .and_then(|groups| groups.first())
        .and_then(|g| GROUPS.get(usize::from(*g)))
        .and_then(|group| group.first())
        .copied()
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn related_names() {
        assert!(related("bob", "robert"));
        assert!(related("robert", "bobby"));
        assert!(related("liz", "elizabeth"));
        assert!(related("alex", "alexandra"));
        assert!(related("alex", "alexander"));
        assert!(!related("alexander", "alexandra"));
        assert!(!related("bob", "william"));
        assert!(related("zed", "zed"));
        assert_eq!(canonical("bill"), "william");
        assert_eq!(canonical("zed"), "zed");
    }
}
