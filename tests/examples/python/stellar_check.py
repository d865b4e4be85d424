"""Checks a contract-deployment transaction tenantd signed, with an XDR
implementation of its own: the Python stellar-sdk.

Usage: stellar_check.py ENVELOPE_BASE64 NETWORK_PASSPHRASE

Decodes the envelope (through the SDK's XDR layer and its transaction
model), re-encodes it, verifies each signature against the source account,
and derives the address of the contract the transaction creates. Prints one
JSON object; the Rust test compares it with what the server recorded.
"""

import hashlib
import json
import sys

from stellar_sdk import Keypair, Network, StrKey, TransactionEnvelope, xdr
from stellar_sdk.exceptions import BadSignatureError


def main() -> None:
    envelope_b64, passphrase = sys.argv[1], sys.argv[2]

    raw = xdr.TransactionEnvelope.from_xdr(envelope_b64)
    modelled = TransactionEnvelope.from_xdr(envelope_b64, passphrase)
    tx = modelled.transaction
    source = tx.source.account_id
    signer = Keypair.from_public_key(source)
    tx_hash = modelled.hash()

    signatures = []
    for decorated in modelled.signatures:
        try:
            signer.verify(tx_hash, decorated.signature)
            valid = True
        except BadSignatureError:
            valid = False
        signatures.append(
            {"valid": valid, "hint_matches": decorated.signature_hint == signer.signature_hint()}
        )

    function = raw.v1.tx.operations[0].body.invoke_host_function_op.host_function
    contract = None
    salt = None
    if function.type == xdr.HostFunctionType.HOST_FUNCTION_TYPE_CREATE_CONTRACT_V2:
        id_preimage = function.create_contract_v2.contract_id_preimage
        salt = id_preimage.from_address.salt.uint256.hex()
        preimage = xdr.HashIDPreimage(
            type=xdr.EnvelopeType.ENVELOPE_TYPE_CONTRACT_ID,
            contract_id=xdr.HashIDPreimageContractID(
                network_id=xdr.Hash(Network(passphrase).network_id()),
                contract_id_preimage=id_preimage,
            ),
        )
        contract = StrKey.encode_contract(hashlib.sha256(preimage.to_xdr_bytes()).digest())

    print(
        json.dumps(
            {
                "xdr_roundtrip": raw.to_xdr() == envelope_b64,
                "model_roundtrip": modelled.to_xdr() == envelope_b64,
                "source": source,
                "sequence": tx.sequence,
                "fee": tx.fee,
                "hash": tx_hash.hex(),
                "signatures": signatures,
                "contract": contract,
                "salt": salt,
            }
        )
    )


if __name__ == "__main__":
    main()
