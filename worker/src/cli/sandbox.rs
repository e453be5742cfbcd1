//! `ledgerflow sandbox --provider NAME --listen ADDR`: one provider's
//! simulator served on its own, so an operator can try `connection add` and
//! `worker` for real before connecting a real account.
//!
//! It prints what a real provider would hand over at install time (Xero:
//! the app's client id and secret, an organisation id, an access and a
//! refresh token; Shopify: the shop domain, an offline access token, the
//! app's webhook secret), a fresh sealing key, and the commands that use
//! them; then it serves until Ctrl-C or SIGTERM. It does not touch the
//! database: everything it knows lives in memory and goes when it stops.
//! The in-process sandboxes the demo and the tests use are
//! [`crate::sandbox`].

use ledgerflow_adapters::shopify::simulator::{
    SimConfig as ShopifySimConfig, Simulator as ShopifySimulator,
};
use ledgerflow_adapters::xero::simulator::{
    SimConfig as XeroSimConfig, Simulator as XeroSimulator,
};
use serde::Serialize;

use crate::interrupt::Signals;

/// Flags of `ledgerflow sandbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// The provider whose simulator to serve.
    #[arg(long, value_enum)]
    pub provider: SandboxProvider,
    /// Address to listen on, e.g. 127.0.0.1:8443 (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Print the ids, tokens and URLs as one JSON object (one line) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxProvider {
    Xero,
    Shopify,
}

/// Why the sandbox could not serve.
#[derive(Debug, thiserror::Error)]
pub enum SandboxCmdError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot listen for Ctrl-C: {0}")]
    Signals(std::io::Error),
    #[error("cannot print the sandbox's details: {0}")]
    Json(#[from] serde_json::Error),
}

/// What an operator needs to connect to the sandbox (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct SandboxDetails {
    pub provider: &'static str,
    pub base_url: String,
    /// A sealing key for `LEDGERFLOW_SECRET_KEY`, made for this run.
    pub secret_key: String,
    pub tenant: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xero: Option<XeroDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shopify: Option<ShopifyDetails>,
}

#[derive(Debug, Clone, Serialize)]
pub struct XeroDetails {
    pub client_id: String,
    pub client_secret: String,
    pub organisation: String,
    pub api_base_url: String,
    pub identity_base_url: String,
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_in: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShopifyDetails {
    pub shop_domain: String,
    pub access_token: String,
    pub webhook_secret: String,
}

/// The simulator being served (dropping it stops it).
enum Served {
    Xero(XeroSimulator),
    Shopify(ShopifySimulator),
}

const TENANT: &str = "sandbox-shop";
const SHOP_NAME: &str = "Sandbox Bike Shop";

/// Serves until Ctrl-C or SIGTERM; a clean stop is a success.
pub async fn run(args: &SandboxArgs) -> Result<(), SandboxCmdError> {
    let mut signals = Signals::listen().map_err(SandboxCmdError::Signals)?;
    let listen_error = |source| SandboxCmdError::Listen {
        addr: args.listen.clone(),
        source,
    };
    let secret_key = hex(&rand::random::<[u8; 32]>());
    let (served, details) = match args.provider {
        SandboxProvider::Xero => {
            let config = XeroSimConfig::default();
            let (client_id, client_secret) =
                (config.client_id.clone(), config.client_secret.clone());
            let sim = XeroSimulator::start_on(config, &args.listen)
                .await
                .map_err(listen_error)?;
            let organisation = sim.add_tenant(SHOP_NAME);
            let tokens = sim.authorize(&[&organisation]);
            let details = SandboxDetails {
                provider: "xero",
                base_url: sim.base_url(),
                secret_key,
                tenant: TENANT,
                xero: Some(XeroDetails {
                    client_id,
                    client_secret,
                    organisation,
                    api_base_url: sim.api_base_url(),
                    identity_base_url: sim.identity_base_url(),
                    access_token: tokens.access_token,
                    refresh_token: tokens.refresh_token,
                    access_expires_in: tokens.expires_in,
                }),
                shopify: None,
            };
            (Served::Xero(sim), details)
        }
        SandboxProvider::Shopify => {
            let sim = ShopifySimulator::start_on(ShopifySimConfig::default(), &args.listen)
                .await
                .map_err(listen_error)?;
            let details = SandboxDetails {
                provider: "shopify",
                base_url: sim.base_url(),
                secret_key,
                tenant: TENANT,
                xero: None,
                shopify: Some(ShopifyDetails {
                    shop_domain: sim.shop_domain(),
                    access_token: sim.issue_token(),
                    webhook_secret: sim.app_secret().expose().to_string(),
                }),
            };
            (Served::Shopify(sim), details)
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&details)?);
    } else {
        print!("{}", render(&details));
    }
    let signal = signals.recv().await;
    let summary = match &served {
        Served::Xero(sim) => {
            let s = sim.stats();
            format!(
                "{} API requests, {} writes committed, {} token refreshes",
                s.api_requests, s.writes_committed, s.refresh_requests
            )
        }
        Served::Shopify(sim) => {
            let s = sim.stats();
            format!(
                "{} REST requests, {} writes committed, {} draft orders, {} orders",
                s.rest_requests,
                s.writes_committed,
                sim.drafts().len(),
                sim.orders().len()
            )
        }
    };
    // Text output is for people; the JSON line stays the only line.
    if !args.json {
        println!(
            "{signal}: the {} sandbox stopped ({summary})",
            details.provider
        );
    }
    drop(served);
    Ok(())
}

/// The details as text, with the commands that use them.
pub fn render(d: &SandboxDetails) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let bin = "ledgerflow";
    match (&d.xero, &d.shopify) {
        (Some(x), _) => {
            line(format!("Xero simulator listening on {}", d.base_url));
            line(format!(
                "  organisation (xero-tenant-id)  {}  ({SHOP_NAME})",
                x.organisation
            ));
            line(format!(
                "  app client id / secret         {} / {}",
                x.client_id, x.client_secret
            ));
            line(format!(
                "  API base URL                   {}",
                x.api_base_url
            ));
            line(format!(
                "  identity base URL              {}",
                x.identity_base_url
            ));
            line(format!(
                "  access token (expires in {} s) {}",
                x.access_expires_in, x.access_token
            ));
            line(format!(
                "  refresh token                  {}",
                x.refresh_token
            ));
            line(String::new());
            line("Try it (another shell, DATABASE_URL set):".into());
            line(format!("  export LEDGERFLOW_SECRET_KEY={}", d.secret_key));
            line(format!(
                "  export LEDGERFLOW_XERO_CLIENT_ID={} LEDGERFLOW_XERO_CLIENT_SECRET={}",
                x.client_id, x.client_secret
            ));
            line(format!(
                "  {bin} tenant add {TENANT} --name \"{SHOP_NAME}\" --time-zone Pacific/Auckland"
            ));
            line(format!(
                "  LEDGERFLOW_ACCESS_TOKEN={} LEDGERFLOW_REFRESH_TOKEN={} \\",
                x.access_token, x.refresh_token
            ));
            line(format!(
                "    {bin} connection add --tenant {TENANT} --provider xero --xero-tenant-id {} \\",
                x.organisation
            ));
            line(format!(
                "    --api-base-url {} --identity-base-url {} \\",
                x.api_base_url, x.identity_base_url
            ));
            line("    --settings-json '{\"auto_sync\":true,\"provider\":{\"provider\":\"xero\",\"default_status\":\"authorised\",\"sync_payments\":true}}' \\".into());
            line("    --options-json '{\"sales_account_code\":\"200\",\"payment_account_code\":\"090\",\"tax_types\":{\"GST15\":\"OUTPUT2\"},\"no_tax_type\":\"NONE\"}'".into());
            line(format!("  {bin} worker --worker-id sandbox"));
        }
        (None, Some(s)) => {
            line(format!("Shopify simulator listening on {}", d.base_url));
            line(format!("  shop domain              {}", s.shop_domain));
            line(format!("  offline access token     {}", s.access_token));
            line(format!("  webhook secret (app's)   {}", s.webhook_secret));
            line(String::new());
            line("Try it (another shell, DATABASE_URL set):".into());
            line(format!("  export LEDGERFLOW_SECRET_KEY={}", d.secret_key));
            line(format!(
                "  {bin} tenant add {TENANT} --name \"{SHOP_NAME}\""
            ));
            line(format!("  LEDGERFLOW_ACCESS_TOKEN={} \\", s.access_token));
            line(format!(
                "    {bin} connection add --tenant {TENANT} --provider shopify --shop-domain {} \\",
                s.shop_domain
            ));
            line(format!("    --api-base-url {} \\", d.base_url));
            line("    --settings-json '{\"auto_sync\":true,\"provider\":{\"provider\":\"shopify\",\"use_draft_orders\":true,\"complete_draft_when_paid\":true}}'".into());
            line(format!(
                "  LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET={} {bin} worker --worker-id sandbox --webhook-listen 127.0.0.1:8080",
                s.webhook_secret
            ));
        }
        (None, None) => {}
    }
    line(String::new());
    line("Serving until Ctrl-C; its state lives in memory only.".into());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
