DROP TABLE login_failures;
DROP TABLE sessions;
DROP TABLE api_keys;
DROP TABLE user_units;
DROP TABLE users;
DROP TABLE units;
DROP TABLE organisations;
