-- Runs once when the compose PostgreSQL volume is created: a read-only role for Grafana's ledger
-- dashboards (the proxy writes as the owner "meter"; Grafana only ever reads).
CREATE ROLE grafana_reader LOGIN PASSWORD 'grafana_reader';
GRANT CONNECT ON DATABASE meter TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE meter IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
