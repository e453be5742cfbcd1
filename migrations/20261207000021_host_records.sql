-- The host's own customers and service items, synced on their own: the
-- "customer created or updated" and "service item created or updated"
-- triggers (QuickBooks syncs both; a provider that keeps no such records
-- of its own records the change as skipped, "not supported by <provider>").
--
--   ledgerflow.host_records           the newest customer / item the host sent, per connection, and what became of it
--   ledgerflow.on_customer_changed(tenant, customer)
--   ledgerflow.on_item_changed(tenant, item)
--                                     the host's triggers (SQL face; the Rust client calls them too)
--   ledgerflow.host_record_skip(c, kind)
--                                     why a change does not sync on a connection (the one copy: triggers and jobs)
--   ledgerflow.changed_item_steps(c, snapshot)
--                                     the sync-item steps an invoice's chain runs before the invoice
--                                     (called by ledgerflow.sync_chain_steps)
--
-- Jobs: `sync-customer` (the kind the invoice chain's customer step uses:
-- one pending per customer, so a change and a chain join) and `sync-item`
-- (one pending per item). Both carry ids only and read the newest record
-- here when they run.

CREATE TABLE ledgerflow.host_records (
    tenant_id      text        NOT NULL,
    connection_id  bigint      NOT NULL REFERENCES ledgerflow.connections (id) ON DELETE CASCADE,
    kind           text        NOT NULL CHECK (kind IN ('customer', 'item')),
    -- The customer's id, or the item's SKU (what invoice lines name it by).
    host_id        text        NOT NULL CHECK (host_id <> ''),
    -- As the host last sent it, checked (ledgerflow.host_record_checked).
    record         jsonb       NOT NULL,
    -- Bumped by every change: a job marks the row synced only for the
    -- version it pushed, so a change made meanwhile stays pending.
    version        bigint      NOT NULL DEFAULT 1,
    status         text        NOT NULL CHECK (status IN ('pending', 'synced', 'skipped', 'failed')),
    -- Why skipped (a code: not_supported, connection_disabled,
    -- provider_sync_off, master_toggle_off, customer_sync_off, item_sync_off).
    skip_reason    text,
    -- Why skipped or failed, in words for people.
    reason         text,
    -- The provider's record once synced.
    external_id    text,
    synced_version bigint,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, kind, host_id)
);

CREATE INDEX host_records_tenant_idx ON ledgerflow.host_records (tenant_id);

COMMENT ON TABLE ledgerflow.host_records IS
    'The host''s customers and service items as last sent by its "changed" triggers, per connection, and whether each synced, was skipped (with the reason) or failed.';

-- The keys of `p` outside `p_allowed`, refused naming the first.
CREATE FUNCTION ledgerflow.host_record_keys(p jsonb, p_what text, p_allowed text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_key text;
BEGIN
    SELECT k INTO v_key FROM jsonb_object_keys(p) k WHERE k <> ALL (p_allowed) ORDER BY k LIMIT 1;
    IF v_key IS NOT NULL THEN
        PERFORM ledgerflow.face_error('22023',
            format('%s: unknown key %s (expected %s)', p_what, ledgerflow.rust_debug_text(v_key), array_to_string(p_allowed, ', ')),
            jsonb_build_object('kind', 'invalid', 'field', p_what || '.' || v_key));
    END IF;
END;
$$;

-- An optional string member: absent / null, or a string.
CREATE FUNCTION ledgerflow.host_record_text(p jsonb, p_key text, p_what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF jsonb_typeof(p -> p_key) NOT IN ('string', 'null') THEN
        PERFORM ledgerflow.face_error('22023', format('%s.%s must be a string', p_what, p_key),
            jsonb_build_object('kind', 'invalid', 'field', p_what || '.' || p_key));
    END IF;
END;
$$;

-- The host's customer or item, checked (the Rust client's types are the
-- same shape: workflows::host_records). Returns it; refuses it (22023,
-- naming the field) otherwise.
--   customer: {"customer_id", "name", "email"?, "phone"?,
--              "address"?: {"line1"?, "line2"?, "city"?, "region"?, "postal_code"?, "country"?}}
--   item:     {"sku", "name", "description"?, "price_minor", "currency", "taxable"}
CREATE FUNCTION ledgerflow.host_record_checked(p_kind text, p jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_key text;
    v_bad boolean := false;
BEGIN
    IF jsonb_typeof(p) IS DISTINCT FROM 'object' THEN
        PERFORM ledgerflow.face_error('22023', format('the %s must be a JSON object', p_kind),
            jsonb_build_object('kind', 'invalid', 'field', p_kind));
    END IF;
    IF p_kind = 'customer' THEN
        PERFORM ledgerflow.host_record_keys(p, 'customer', ARRAY['customer_id', 'name', 'email', 'phone', 'address']);
        FOREACH v_key IN ARRAY ARRAY['customer_id', 'name', 'email', 'phone'] LOOP
            PERFORM ledgerflow.host_record_text(p, v_key, 'customer');
        END LOOP;
        IF ledgerflow.blank(p ->> 'customer_id') OR ledgerflow.blank(p ->> 'name') THEN
            PERFORM ledgerflow.face_error('22023', 'a customer needs a customer_id and a name',
                jsonb_build_object('kind', 'invalid', 'field', 'customer'));
        END IF;
        IF p ->> 'email' IS NOT NULL AND p ->> 'email' !~ '^[^@[:space:]]+@[^@[:space:]]+$' THEN
            PERFORM ledgerflow.face_error('22023',
                format('customer.email: %s is not an e-mail address', ledgerflow.rust_debug_text(p ->> 'email')),
                jsonb_build_object('kind', 'invalid', 'field', 'customer.email'));
        END IF;
        IF jsonb_typeof(p -> 'address') = 'object' THEN
            PERFORM ledgerflow.host_record_keys(p -> 'address', 'customer.address',
                ARRAY['line1', 'line2', 'city', 'region', 'postal_code', 'country']);
            FOREACH v_key IN ARRAY ARRAY['line1', 'line2', 'city', 'region', 'postal_code', 'country'] LOOP
                PERFORM ledgerflow.host_record_text(p -> 'address', v_key, 'customer.address');
            END LOOP;
        ELSIF jsonb_typeof(p -> 'address') IS DISTINCT FROM 'null' AND p ? 'address' THEN
            PERFORM ledgerflow.face_error('22023', 'customer.address must be an object',
                jsonb_build_object('kind', 'invalid', 'field', 'customer.address'));
        END IF;
    ELSIF p_kind = 'item' THEN
        PERFORM ledgerflow.host_record_keys(p, 'item',
            ARRAY['sku', 'name', 'description', 'price_minor', 'currency', 'taxable']);
        FOREACH v_key IN ARRAY ARRAY['sku', 'name', 'description', 'currency'] LOOP
            PERFORM ledgerflow.host_record_text(p, v_key, 'item');
        END LOOP;
        IF ledgerflow.blank(p ->> 'sku') OR ledgerflow.blank(p ->> 'name') THEN
            PERFORM ledgerflow.face_error('22023', 'an item needs a sku and a name',
                jsonb_build_object('kind', 'invalid', 'field', 'item'));
        END IF;
        -- Two steps: the casts only run on a number.
        IF jsonb_typeof(p -> 'price_minor') IS DISTINCT FROM 'number' THEN
            v_bad := true;
        ELSIF (p ->> 'price_minor')::numeric <> trunc((p ->> 'price_minor')::numeric)
           OR (p ->> 'price_minor')::numeric < 0 OR NOT ledgerflow.fits_i64((p ->> 'price_minor')::numeric) THEN
            v_bad := true;
        END IF;
        IF v_bad THEN
            PERFORM ledgerflow.face_error('22023',
                'item.price_minor must be a whole number of minor units, 0 or more (1250 is 12.50)',
                jsonb_build_object('kind', 'invalid', 'field', 'item.price_minor'));
        END IF;
        IF ledgerflow.currency_exponent(p ->> 'currency') IS NULL THEN
            PERFORM ledgerflow.face_error('22023',
                format('item.currency: %s is not a known ISO 4217 code', coalesce(ledgerflow.rust_debug_text(p ->> 'currency'), 'nothing')),
                jsonb_build_object('kind', 'invalid', 'field', 'item.currency'));
        END IF;
        IF jsonb_typeof(p -> 'taxable') IS DISTINCT FROM 'boolean' THEN
            PERFORM ledgerflow.face_error('22023', 'item.taxable must be true or false',
                jsonb_build_object('kind', 'invalid', 'field', 'item.taxable'));
        END IF;
        RETURN p || jsonb_build_object('currency', upper(p ->> 'currency'));
    ELSE
        PERFORM ledgerflow.face_error('22023', format('unknown host record kind %s', ledgerflow.rust_debug_text(p_kind)),
            jsonb_build_object('kind', 'invalid', 'field', 'kind'));
    END IF;
    RETURN p;
END;
$$;

-- Why a customer / item change does not sync on connection `c`
-- ({code, message}), or NULL when it does. In order: a provider that keeps
-- no such records of ledgerflow's (every one but QuickBooks), a disabled
-- connection, QuickBooks' "Enable Sync", the master toggle (automatic
-- sync), then the data type's own toggle.
CREATE FUNCTION ledgerflow.host_record_skip(c ledgerflow.connections, p_kind text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN c.provider <> 'quickbooks' THEN jsonb_build_object('code', 'not_supported',
            'message', format('not supported by %s', ledgerflow.provider_display_name(c.provider)))
        WHEN c.status = 'disabled' THEN jsonb_build_object('code', 'connection_disabled',
            'message', format('the %s connection is disabled', ledgerflow.provider_display_name(c.provider)))
        WHEN NOT ledgerflow.setting(c.settings, '{provider,sync_enabled}', true) THEN
            jsonb_build_object('code', 'provider_sync_off', 'message', ledgerflow.skip_message('provider_sync_off'))
        WHEN NOT ledgerflow.setting(c.settings, '{auto_sync}', false) THEN
            jsonb_build_object('code', 'master_toggle_off', 'message', ledgerflow.skip_message('master_toggle_off'))
        WHEN p_kind = 'customer' AND NOT ledgerflow.setting(c.settings, '{provider,sync_customers}', true) THEN
            jsonb_build_object('code', 'customer_sync_off', 'message', 'customer sync is off for this connection')
        WHEN p_kind = 'item' AND NOT ledgerflow.setting(c.settings, '{provider,sync_service_items}', true) THEN
            jsonb_build_object('code', 'item_sync_off', 'message', 'service item sync is off for this connection')
    END
$$;

-- A customer or item changed in the host: recorded on every connection of
-- the tenant (skipped with the reason, or pending with its job enqueued),
-- in the caller's transaction. Returns one element per connection, oldest
-- first: {connection_id, provider, status, skip_reason, reason, job_id}.
CREATE FUNCTION ledgerflow.host_record_changed(p_tenant text, p_kind text, p_record jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_record jsonb := ledgerflow.host_record_checked(p_kind, p_record);
    v_id text := v_record ->> CASE WHEN p_kind = 'customer' THEN 'customer_id' ELSE 'sku' END;
    c ledgerflow.connections;
    v_skip jsonb;
    v_job bigint;
    v_out jsonb := '[]';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ledgerflow.tenants t WHERE t.id = p_tenant) THEN
        PERFORM ledgerflow.face_error('P0002', format('tenant %s does not exist', ledgerflow.rust_debug_text(p_tenant)),
            jsonb_build_object('kind', 'tenant_not_found', 'tenant', p_tenant));
    END IF;
    FOR c IN SELECT * FROM ledgerflow.connections x WHERE x.tenant_id = p_tenant ORDER BY x.id LOOP
        v_skip := ledgerflow.host_record_skip(c, p_kind);
        v_job := NULL;
        INSERT INTO ledgerflow.host_records AS r
            (tenant_id, connection_id, kind, host_id, record, status, skip_reason, reason)
        VALUES (c.tenant_id, c.id, p_kind, v_id, v_record,
                CASE WHEN v_skip IS NULL THEN 'pending' ELSE 'skipped' END,
                v_skip ->> 'code', v_skip ->> 'message')
        ON CONFLICT (connection_id, kind, host_id) DO UPDATE
            SET record = excluded.record, version = r.version + 1, status = excluded.status,
                skip_reason = excluded.skip_reason, reason = excluded.reason, updated_at = now();
        IF v_skip IS NULL THEN
            v_job := ledgerflow.enqueue(
                kind => CASE WHEN p_kind = 'customer' THEN 'sync-customer' ELSE 'sync-item' END,
                payload => jsonb_build_object('tenant', c.tenant_id, 'connection_id', c.id,
                                              CASE WHEN p_kind = 'customer' THEN 'customer_id' ELSE 'sku' END, v_id),
                queue => 'default', priority => 1::smallint, tenant => c.tenant_id,
                -- The invoice chain's steps use the same keys: a change and
                -- a chain waiting on the same record join one job.
                unique_key => format('%s:%s:%s', p_kind, c.id, v_id), kind_version => 1,
                hold_key => format('connection:%s', c.id));
        END IF;
        v_out := v_out || jsonb_build_array(jsonb_build_object(
            'connection_id', c.id, 'provider', c.provider,
            'status', CASE WHEN v_skip IS NULL THEN 'pending' ELSE 'skipped' END,
            'skip_reason', v_skip ->> 'code', 'reason', v_skip ->> 'message', 'job_id', v_job));
    END LOOP;
    RETURN v_out;
END;
$$;

-- The host's "customer created or updated" trigger.
CREATE FUNCTION ledgerflow.on_customer_changed(tenant text, customer jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT ledgerflow.host_record_changed(on_customer_changed.tenant, 'customer', on_customer_changed.customer)
$$;

-- The host's "service item created or updated" trigger.
CREATE FUNCTION ledgerflow.on_item_changed(tenant text, item jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT ledgerflow.host_record_changed(on_item_changed.tenant, 'item', on_item_changed.item)
$$;

-- The chain steps of the service items an invoice's lines name (by SKU)
-- that the host changed and that have not synced yet on connection `c`
-- (QuickBooks, service items on): `ledgerflow.sync_chain_steps` puts them
-- before the invoice step, so an invoice line names the host's item as
-- the host last sent it.
CREATE FUNCTION ledgerflow.changed_item_steps(c ledgerflow.connections, s jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(ledgerflow.chain_step('item ' || r.host_id, 'sync-item',
               jsonb_build_object('tenant', c.tenant_id, 'connection_id', c.id, 'sku', r.host_id),
               format('item:%s:%s', c.id, r.host_id), format('connection:%s', c.id), '{}') ORDER BY r.host_id), '[]')
    FROM ledgerflow.host_records r
    WHERE c.provider = 'quickbooks' AND ledgerflow.setting(c.settings, '{provider,sync_service_items}', true)
      AND r.connection_id = c.id AND r.kind = 'item' AND r.status = 'pending'
      AND r.host_id IN (SELECT l ->> 'sku' FROM jsonb_array_elements(coalesce(s -> 'lines', '[]')) l)
$$;
