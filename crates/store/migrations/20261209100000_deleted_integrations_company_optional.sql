-- An integration deleted before deletions were recorded has no row left to name its company:
-- an operator records it as deleted by its id alone (`crm-sync admin forget-integration`).
ALTER TABLE deleted_integrations ALTER COLUMN company_id DROP NOT NULL;
