//! The recorder's tap (`SessionConfig::record`): verified signed batches handed over as they
//! arrived, with the meaning of the route ids they use.

use super::*;

impl Session {
    /// With `config.record`, hands a verified signed batch over (not a duplicate), with the
    /// meaning of the route ids it uses that this session did not hand over yet.
    pub(super) fn record(&mut self, frame: &Bytes, batch: &Batch) {
        if !self.config.record || !self.signing() || batch.last_seq < self.expected {
            return;
        }
        let (Some(signer), Some(conn)) = (self.peer_key, self.conn.as_ref()) else {
            return;
        };
        let session = conn.info.session_id;
        if self.recorded_session != Some(session) {
            self.recorded_session = Some(session);
            self.recorded_routes.clear();
        }
        let mut routes = Vec::new();
        for message in &batch.messages {
            if !matches!(message.correlation, Correlation::None) {
                continue;
            }
            let Some(ad) = self.peer_routes.intents.get(&message.route_id) else {
                continue;
            };
            if self.recorded_routes.get(&message.route_id) != Some(&ad.route) {
                self.recorded_routes
                    .insert(message.route_id, ad.route.clone());
                routes.push((message.route_id, ad.route.clone(), ad.fingerprint));
            }
        }
        self.events
            .push_back(Event::SignedBatch(Box::new(SignedBatch {
                frame: frame.clone(),
                session,
                signer,
                routes,
            })));
    }
}
