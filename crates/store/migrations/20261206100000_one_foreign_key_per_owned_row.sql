-- An activity belongs to its workflow and a record owner to its integration; their company and
-- integration columns were each checked by a foreign key of their own. Those checks cost the
-- provisioner three index look-ups and row locks per event (on the same few company and
-- integration rows, shared by every concurrent transaction), and two of the cascades behind them
-- had no index to use: deleting an integration read all of activities, deleting a company all
-- of record_owners. One foreign key per table on the whole tenancy (workflow, integration,
-- company) checks more, that the columns agree with the parent, in one look-up, and its cascade
-- goes through the primary key or the (workflow_id, record_id) index.
ALTER TABLE workflows ADD CONSTRAINT workflows_tenancy UNIQUE (id, integration_id, company_id);
ALTER TABLE integrations ADD CONSTRAINT integrations_tenancy UNIQUE (id, company_id);

ALTER TABLE activities
    DROP CONSTRAINT activities_company_id_fkey,
    DROP CONSTRAINT activities_integration_id_fkey,
    DROP CONSTRAINT activities_workflow_id_fkey,
    ADD CONSTRAINT activities_workflow_fkey FOREIGN KEY (workflow_id, integration_id, company_id)
        REFERENCES workflows (id, integration_id, company_id) ON DELETE CASCADE NOT VALID;
ALTER TABLE activities VALIDATE CONSTRAINT activities_workflow_fkey;

ALTER TABLE record_owners
    DROP CONSTRAINT record_owners_company_id_fkey,
    DROP CONSTRAINT record_owners_integration_id_fkey,
    ADD CONSTRAINT record_owners_integration_fkey FOREIGN KEY (integration_id, company_id)
        REFERENCES integrations (id, company_id) ON DELETE CASCADE NOT VALID;
ALTER TABLE record_owners VALIDATE CONSTRAINT record_owners_integration_fkey;
