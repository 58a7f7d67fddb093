-- Run once by the postgres image on an empty data directory
-- (mounted into /docker-entrypoint-initdb.d). One database per service; the schemas
-- themselves come from the migrations (`amsctl db migrate`, the compose `migrate` service).
CREATE DATABASE authdb;
CREATE DATABASE apidb;
CREATE DATABASE admindb;
