//! The change-stream pipelines the gateway sends: the live watcher's (every configured source,
//! documents only) and a catch-up's (the same, narrowed to one connection's channels so that
//! MongoDB filters, not the gateway).

use bson::{doc, Bson, Document};

use crate::channel::Channel;
use crate::routing::SourceSpecs;

/// Inserts, updates and replaces in the configured collections.
pub fn live(sources: &SourceSpecs) -> Vec<Document> {
    let colls: Vec<Bson> = sources
        .collections()
        .map(|c| Bson::String(c.to_owned()))
        .collect();
    vec![doc! {"$match": {
        "operationType": {"$in": ["insert", "update", "replace"]},
        "ns.coll": {"$in": colls},
    }}]
}

/// The live pipeline narrowed to documents routed to one of `channels` (or below them).
/// `None` when no configured source can route anything to these channels.
pub fn for_channels(sources: &SourceSpecs, channels: &[Channel]) -> Option<Vec<Document>> {
    let mut any_of: Vec<Bson> = Vec::new();
    for spec in sources.iter() {
        for ch in channels {
            if let Some(mut f) = spec.filter_for(ch, "fullDocument.") {
                f.insert("ns.coll", spec.collection.clone());
                any_of.push(Bson::Document(f));
            }
        }
    }
    if any_of.is_empty() {
        return None;
    }
    let mut stages = live(sources);
    stages.push(doc! {"$match": {"$or": any_of}});
    Some(stages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrows_to_channels() {
        let sources =
            SourceSpecs::parse("logs:logs:workspace_id/workflow_id,audit:audit:org").unwrap();
        let chans = [
            Channel::parse("logs:w1").unwrap(),
            Channel::parse("nope:x").unwrap(),
        ];
        let p = for_channels(&sources, &chans).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[1],
            doc! {"$match": {"$or": [{"fullDocument.workspace_id": "w1", "ns.coll": "logs"}]}}
        );
        assert!(for_channels(&sources, &[Channel::parse("nope").unwrap()]).is_none());
    }
}
