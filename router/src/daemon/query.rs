//! Questions and commands for the main loop from the admin socket and the metrics: run on the
//! loop with its networks' state, the answer sent back; and which network a request names.

use std::time::Instant;

use skyvine_core::networks::{NetworkNode, Networks};
use skyvine_core::node::Node;
use tokio::sync::mpsc;

use super::{Input, Shared};

/// A question for the main loop, answered from the networks' state (admin CLI, metrics).
pub type Query = Box<dyn FnOnce(&Networks, &Shared, Instant) + Send>;

/// Asks the main loop questions; cheap to clone.
#[derive(Clone, Debug)]
pub struct QueryHandle(pub(super) mpsc::Sender<Input>);

impl QueryHandle {
    /// Runs `question` on the main loop and returns its answer, or `None` if the router is
    /// shutting down.
    pub async fn ask<T: Send + 'static>(
        &self,
        question: impl FnOnce(&Networks, &Shared, Instant) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let query: Query = Box::new(move |node, shared, now| {
            // The asker may have gone away; nothing to do then.
            let _ = tx.send(question(node, shared, now));
        });
        self.0.send(Input::Query(query)).await.ok()?;
        rx.await.ok()
    }

    /// [`QueryHandle::ask`] about one network: the one named `network`, or the only one.
    /// `Some(Err)` names the networks when that is not one.
    pub async fn ask_network<T: Send + 'static>(
        &self,
        network: Option<String>,
        question: impl FnOnce(&NetworkNode, &Shared, Instant) -> T + Send + 'static,
    ) -> Option<Result<T, String>> {
        self.ask(move |networks, shared, now| {
            select_network(networks, network.as_deref()).map(|n| question(n, shared, now))
        })
        .await
    }

    /// Runs `command` on the main loop with the node of `network` (or of the only network) to
    /// change, and returns its answer; the effects it leaves are applied as any input's.
    pub async fn command<T: Send + 'static>(
        &self,
        network: Option<String>,
        command: impl FnOnce(&mut Node, Instant) -> T + Send + 'static,
    ) -> Option<Result<T, String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let boxed: Command = Box::new(move |networks, now| {
            let id = select_network(networks, network.as_deref()).map(|n| n.id);
            let answer = id.and_then(|id| {
                let target = networks.get_mut(id).ok_or("no such network")?;
                Ok(command(&mut target.node, now))
            });
            // The asker may have gone away; nothing to do then.
            let _ = tx.send(answer);
        });
        self.0.send(Input::Command(boxed)).await.ok()?;
        rx.await.ok()
    }
}

/// A command for the main loop that changes a node (admin `migration prepare`/`cancel`).
pub type Command = Box<dyn FnOnce(&mut Networks, Instant) + Send>;

/// The network named `name`; without a name, the router's only network. The error says
/// which networks there are.
pub fn select_network<'a>(
    networks: &'a Networks,
    name: Option<&str>,
) -> Result<&'a NetworkNode, String> {
    let names = || {
        networks
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(name) => networks.by_name(name).ok_or_else(|| {
            format!(
                "no network {name:?} on this router (it carries {})",
                names()
            )
        }),
        None => {
            let mut all = networks.iter();
            match (all.next(), all.next()) {
                (Some(only), None) => Ok(only),
                _ => Err(format!(
                    "this router carries several networks ({}): name one with --network",
                    names()
                )),
            }
        }
    }
}
