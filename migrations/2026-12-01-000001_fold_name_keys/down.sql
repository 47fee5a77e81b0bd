-- The keys stay folded (SQL cannot undo the folding): after a downgrade, names whose folded key differs from
-- their lower case (`straße`, full-width letters) are found by their folded spelling only.
SELECT 1;
