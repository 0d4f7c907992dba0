-- Acquire must find the free resource that has been free longest through
-- resources_free, in order and without a sort. With an index on
-- (type, state) beside it, the planner, working from statistics taken
-- when the table was new, chose that one and sorted every free resource
-- on each acquire: 38 ms per acquire with 10,000 resources, and falling
-- throughput. Pool counts and state filters do without it.
DROP INDEX resources_type_state;

-- Hot, small tables: vacuum and analyze them after a few thousand changes
-- rather than after a fifth of the table, where autovacuum runs at all.
ALTER TABLE resources SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 2000);
ALTER TABLE requests SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
