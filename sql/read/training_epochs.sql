-- Training's epochs (report).
SELECT phase, epoch, loss, valid_ndcg FROM training_epochs
