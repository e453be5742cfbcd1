-- QuickBooks Online: what only QuickBooks needs.
--
-- The refresh token's hard expiry. Intuit caps a refresh token at five
-- years (`x_refresh_token_hard_expires_in`, sent with every token answer);
-- the kit stores it with the credentials when a provider's token answer
-- names it, and `connection show` warns 30 days ahead. The column is
-- provider-neutral (NULL where a provider has no cap) and lives on the
-- shared credentials table; it is added here because QuickBooks is the
-- first provider that needs it.
ALTER TABLE ledgerflow.provider_credentials
    ADD COLUMN refresh_expires_at timestamptz;

COMMENT ON COLUMN ledgerflow.provider_credentials.refresh_expires_at IS
    'When the refresh token stops working whatever is done (QuickBooks'' five-year cap); NULL when the provider has none or did not say.';
