package keys

// Known answers of the derivations (TestDerivationKnownAnswers): inputs
// k128/k256, key ids 1 and 9, addresses 10.20.0.5 (a) and 10.20.1.7 (b).
var kat = map[string]string{
	"KAT_ESP_K1_AB": "60d9a8961f4e651d351bee7907a4b48c8218d90a",
	"KAT_ESP_K1_BA": "617d4878b5a76894b91e30268b4f6b9cad39c4cd",
	"KAT_ESP_K9_AB": "14156f9eaaa6435ed7f7e726b856c0d9a4bdda392cf9b6b647c03306aec940565e6bbfb6",
	"KAT_SAK_K9":    "506f119efe55ebe5da82b5ec34f94d7381d413f776ac95fe18bda4499f94782b",
	"KAT_SALT_K1":   "f02a11854b70b255c0eee290",
}

// kSCI is SCI(10.20.0.5).
const kSCI = 0x56e15b31ea370001
