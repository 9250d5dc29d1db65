"""The subscriber pages (Flask under waitress): sign-up, confirm, unsubscribe,
preferences and the archive; rate limits shared through the store."""
