"""What an edition says: teasers, topics, links, and the edition's content (select the new
articles, group them by topic, rank and cap them)."""
