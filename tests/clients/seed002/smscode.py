import requests

url = "https://sms.tinsight.tech/apiv2/smscode/"

payload={'phone_number': 'XXXXXXXXX'}

headers = {
    'Authorization': 'Token xxxxxxxxxxxxxxxxxxxxxxxxx'
}

response = requests.request("POST", url, headers=headers, data=payload)

print(response.text)
