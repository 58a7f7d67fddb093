"""The browser-facing frontends (backends-for-frontends): the user portal and the admin console."""
